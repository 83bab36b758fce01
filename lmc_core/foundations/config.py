"""The study config: one pydantic model that the CLI parses, the API validates and the run id hashes.

Pure data: it checks types, ranges and how fields relate. Names that registries resolve (datasets,
mask sources) are checked by `lmc_core.studies.validation`, which the CLI, the API and the worker all use.

Every field has a default, so a preset is a small set of overrides. Fields use the field's words:
a *mask source* produces one mask per pruning *round*; a subnetwork (mask, *rewind step* k) is
trained as two *copies* that differ only in SGD noise (data order and augmentation); the linear
*path* between the copies gives the *barrier*.
"""

from __future__ import annotations

import hashlib
import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, PositiveFloat, PositiveInt, field_validator, model_validator


class _Strict(BaseModel):
    """Unknown keys are errors: a typo in a config must never silently fall back to a default."""

    model_config = ConfigDict(extra="forbid", validate_default=True)


class DataConfig(_Strict):
    name: str = Field(
        "mnist1d",
        description="Dataset registry key: mnist1d, digits, teacher, cifar10, cifar100, mnist, fashion_mnist, npz, image_folder.",
    )
    path: str | None = Field(
        None,
        description="File or folder for datasets read from local files (CIFAR archive folder, IDX folder, .npz file, "
        "image_folder root holding train/ and val/ (or test/) with one folder of JPEG/PNG images per class).",
    )
    normalize: bool = Field(True, description="Standardise each input channel with the training split's mean and std.")
    normalize_stats: Literal["train", "imagenet"] = Field(
        "train",
        description="Statistics `normalize` uses: the training split's own per-channel mean and std, or ImageNet's standard "
        "mean (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225), as the authors normalise ImageNet subsets (RGB images only).",
    )
    image_size: PositiveInt | None = Field(
        None,
        description="image_folder only: images are resized so the shorter side is image_size, then centre-cropped to "
        "image_size x image_size; None = 224, as the paper's ImageNet-10 (3 x 224 x 224 bytes per image while decoding).",
    )
    classes: list[str] | None = Field(
        None,
        description="image_folder only: the class folders to use, in label order (label i = classes[i]), e.g. ImageNet-10's "
        "10 wnids; None = every class folder of train/, sorted by name.",
    )
    augmentation: Literal["none", "shift", "crop_flip", "dsa"] = Field(
        "none",
        description="Training-time augmentation: 'shift' = random circular shift of 1-D signals; 'crop_flip' = padded random crop + "
        "horizontal flip of images; 'dsa' = differentiable siamese augmentation with `dsa_strategy` "
        "(the paper's real-data recipe with dsa_strategy 'idc:color_crop_flip_scale_rotate').",
    )
    dsa_strategy: str = Field(
        "auto",
        description="DSA transforms joined by '_' (images: color crop cutout flip scale rotate; signals: shift scale); "
        "auto = all of the kind's. A prefix sets the mode: 'single:' (the default) = one transform per batch; 'all:' = every "
        "one; 'idc:' = IDC's recipe, flip and color every batch plus one of the others, then cutout "
        "('idc:color_crop_flip_scale_rotate' is the paper's).",
    )
    max_shift: NonNegativeInt = Field(3, description="Largest circular shift (samples) for 'shift'.")
    crop_padding: NonNegativeInt = Field(4, description="Zero padding (pixels) before the random crop for 'crop_flip'.")
    train_size: PositiveInt | None = Field(
        None, description="Use a class-balanced subset of this many training examples (chosen with `seed`)."
    )
    seed: int = Field(0, description="Seed of the training subset and of procedurally generated datasets.")

    @model_validator(mode="after")
    def _image_folder_options(self) -> DataConfig:
        used = [f for f in ("image_size", "classes") if getattr(self, f) is not None]
        if used and self.name != "image_folder":
            raise ValueError(f"data.{' and data.'.join(used)} apply to the image_folder reader only; remove them for dataset {self.name!r}")
        if self.classes is not None:
            if not self.classes:
                raise ValueError("data.classes is empty; list the class folders to use, or leave it out to use them all")
            if len(set(self.classes)) != len(self.classes):
                raise ValueError(f"data.classes repeats a class: {self.classes}")
        return self


class ModelConfig(_Strict):
    arch: Literal["mlp", "convnet", "resnet10", "resnet18", "resnet10_imagenet", "resnet18_imagenet"] = Field(
        "mlp",
        description="mlp, convnet, resnet10 / resnet18 (the half-width CIFAR ResNets: 3x3 stem, widths 32-256) or "
        "resnet10_imagenet / resnet18_imagenet (7x7 stride-2 stem + max-pool, widths 64-512).",
    )
    hidden: list[PositiveInt] = Field(default_factory=lambda: [100, 100], description="MLP hidden widths.")
    depth: PositiveInt = Field(3, description="ConvNet: number of conv blocks.")
    width: PositiveInt = Field(64, description="ConvNet: channels per conv block.")
    kernel_size: PositiveInt = Field(3, description="ConvNet: kernel size.")
    stride: PositiveInt = Field(1, description="ConvNet: stride of every conv.")
    norm: Literal["none", "instance", "batch", "group"] = Field("none", description="ConvNet normalisation layer.")
    groups: PositiveInt = Field(8, description="Groups for norm='group'.")
    pooling: Literal["none", "avg", "max"] = Field("none", description="ConvNet: 2x pooling after each block.")


class TrainConfig(_Strict):
    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: PositiveFloat = 0.1
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    nesterov: bool = False
    weight_decay: float = Field(0.0, ge=0.0)
    batch_size: PositiveInt = 32
    drop_last: bool = Field(
        False,
        description="Drop each epoch's last partial batch. False (the default, as the authors' DataLoader) sees every example "
        "every epoch; true keeps every step at batch_size examples (and drops up to batch_size - 1 examples per epoch).",
    )
    epochs: PositiveInt | None = Field(20, description="Training length in epochs (one of epochs / steps).")
    steps: PositiveInt | None = Field(None, description="Training length in optimizer steps; overrides epochs when set.")
    schedule: Literal["constant", "cosine", "multistep"] = "cosine"
    milestones: list[PositiveFloat] = Field(default_factory=list, description="multistep: epochs at which the lr is multiplied by gamma.")
    gamma: PositiveFloat = 0.1
    warmup_steps: NonNegativeInt = Field(0, description="Linear warm-up from 0 over this many steps, then the schedule.")
    cutmix: float = Field(
        0.0, ge=0.0, le=1.0, description="Probability that a batch is CutMixed (beta = 1), as the paper trains with DSA + CutMix."
    )
    eval_batch_size: PositiveInt = 1000

    @model_validator(mode="after")
    def _length(self) -> TrainConfig:
        if self.epochs is None and self.steps is None:
            raise ValueError("set either train.epochs or train.steps")
        if self.nesterov and (self.optimizer != "sgd" or self.momentum == 0):
            raise ValueError("nesterov needs optimizer='sgd' with momentum > 0")
        return self


class PruningConfig(_Strict):
    mask_sources: list[str] = Field(
        default_factory=lambda: ["dense", "imp", "random"],
        description="Mask sources to study: dense (round 0 only), imp (magnitude pruning of the trained copy A), random (random masks with "
        "IMP's per-layer counts), random_global (the authors' control: a random 20 % of the survivors per round, ranked globally), "
        "distilled.<set> (IMP trained on synthetic set <set>), subset.<set> (IMP trained on a random real subset "
        "of <set>'s size), combined.<set>.r<R> (real-data IMP started from distilled.<set>'s round-R mask).",
    )
    rounds: NonNegativeInt = Field(2, description="Pruning rounds after the dense round 0; sparsity after r rounds is 1 - (1 - rate)^r.")
    rate: float = Field(0.2, gt=0.0, lt=1.0, description="Fraction of the remaining weights removed per round.")
    scope: Literal["global", "layerwise"] = Field("global", description="Rank magnitudes across all prunable layers, or within each layer.")
    keep_first_dense: bool = Field(False, description="Never prune the first layer.")
    keep_last_dense: bool = Field(False, description="Never prune the classifier layer.")
    rewind_steps: list[NonNegativeInt] = Field(
        default_factory=lambda: [0], description="Rewind steps k: 0 rewinds to the init (the paper), k > 0 is late rewinding."
    )
    rewind: Literal["full", "weights"] = Field(
        "full",
        description="What goes back to theta_k after pruning: full = the whole state (lottery-ticket rewinding); weights = only "
        "the conv and linear weights, as the authors' code, so biases, norm parameters and running statistics keep the values "
        "of the trained network that was pruned (the dense round 0 and random masks always rewind in full).",
    )
    seed: int = Field(0, description="Seed of random masks.")

    @field_validator("mask_sources")
    @classmethod
    def _unique_sources(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("list at least one mask source, e.g. ['dense']")
        if len(set(v)) != len(v):
            raise ValueError(f"mask sources repeat: {v}")
        return v

    @field_validator("rewind_steps")
    @classmethod
    def _unique_steps(cls, v: list[int]) -> list[int]:
        if not v:
            raise ValueError("list at least one rewind step, e.g. [0]")
        return sorted(set(v))


def _test_and_train() -> list[Literal["train", "test"]]:
    return ["test", "train"]


class StabilityConfig(_Strict):
    pairs: list[tuple[int, int]] = Field(
        default_factory=lambda: [(100, 101)],
        description="SGD-noise seed pairs; copy seed s drives both its data order and its augmentation. "
        "Pair 0's copy A is the one IMP prunes.",
    )
    alphas: PositiveInt = Field(31, ge=2, description="Evenly spaced interpolation coefficients in [0, 1], both endpoints included.")
    splits: list[Literal["train", "test"]] = Field(default_factory=_test_and_train)
    bn_mode: Literal["auto", "reestimate", "interpolate", "endpoint"] = Field(
        "auto",
        description="BatchNorm statistics along the path: re-estimate at every alpha (auto for BN nets), "
        "interpolate the running stats, or keep copy A's.",
    )
    bn_batches: PositiveInt = Field(8, description="Calibration batches for bn_mode='reestimate'.")
    rounds: list[NonNegativeInt] | None = Field(
        None,
        description="Pruning rounds whose subnetworks are tested (the paper: 0, 4, 9); None = every round. "
        "Untested IMP rounds train only copy A.",
    )
    parent_seed: int = Field(0, description="Seed of the dense parent run that trains the init to the rewind step k.")

    @field_validator("pairs")
    @classmethod
    def _distinct(cls, v: list[tuple[int, int]]) -> list[tuple[int, int]]:
        if not v:
            raise ValueError("list at least one seed pair, e.g. [[100, 101]]")
        for a, b in v:
            if a == b:
                raise ValueError(f"seed pair ({a}, {b}) has equal seeds: the two copies would be identical")
        return v


class SweepConfig(_Strict):
    """Instability as a function of the rewind step k (Frankle et al. 2020, Figure 3)."""

    steps: list[NonNegativeInt] = Field(default_factory=list, description="Rewind steps k at which to split; empty disables the sweep.")
    masks: list[str] = Field(
        default_factory=lambda: ["dense"],
        description="Masks to sweep: 'dense' or '<source>-k<K>-r<R>', e.g. 'imp-k0-r2' (the mask of IMP round 2 found with rewind step 0).",
    )


class DCSettings(_Strict):
    """Gradient matching (DC, Zhao et al. 2021). The defaults are DC's; IDC (Kim et al. 2022) = match 'mse', layers 'conv',
    net_data 'real' with its network schedule (the paper-cifar presets' settings), factor 2."""

    outer_loop: PositiveInt | None = Field(None, description="Image updates per sampled network; None = DC's get_loops(ipc).")
    inner_loop: PositiveInt | None = Field(
        None,
        description="Network SGD steps between image updates; None = DC's get_loops(ipc). IDC: 32 batches of 64 real images "
        "(its n_data=2000 stops at the first batch that reaches 2,000 examples).",
    )
    lr_net: PositiveFloat = Field(0.01, description="SGD lr of the matching network.")
    match: Literal["cos", "mse"] = Field(
        "cos", description="Gradient distance: DC's per-output-row cosine ('cos') or IDC's squared error ('mse')."
    )
    layers: Literal["all", "conv"] = Field(
        "all",
        description="Gradients that enter the match: 'all' = every parameter (DC; its cosine skips 1-D tensors such as biases); "
        "'conv' = convolution weights only (IDC's default: biases, norm parameters and the linear classifier left out).",
    )
    net_data: Literal["synthetic", "real"] = Field(
        "synthetic", description="Data the matching network trains on between matches: DC trains on the synthetic set, IDC on real data."
    )
    net_batch: PositiveInt | None = Field(
        None, description="Real examples per network step when net_data='real', drawn at random; None = batch_real (IDC: 64)."
    )
    net_momentum: float = Field(
        0.0, ge=0.0, lt=1.0, description="Momentum of the matching network's SGD, kept while the network lives (DC: 0; IDC: 0.9)."
    )
    net_weight_decay: float = Field(0.0, ge=0.0, description="Weight decay of the matching network's SGD (DC: 0; IDC: 5e-4).")
    net_cutmix: float = Field(
        0.0, ge=0.0, le=1.0, description="Probability that a network step uses CutMix, beta 1 (DC: 0; IDC on CIFAR: 0.5)."
    )
    net_dsa: str | None = Field(
        None,
        description="DSA strategy of the network's steps; None = the matching strategy `dsa`. IDC drops cutout when CutMix is on: "
        "'idc:color_crop'.",
    )


class MTTSettings(_Strict):
    """Matching training trajectories (Cazenavette et al. 2022)."""

    experts: PositiveInt = Field(5, description="Expert trajectories trained on real data (published: 100).")
    expert_train_epochs: PositiveInt = Field(
        20, description="Epochs per expert trajectory; parameters are stored after each (published: 50)."
    )
    lr_teacher: PositiveFloat = Field(
        0.01, description="Experts' SGD lr (no momentum, no weight decay, as MTT's buffer.py); also the initial synthetic lr."
    )
    expert_batch: PositiveInt = Field(256, description="Experts' batch size.")
    syn_steps: PositiveInt = Field(20, description="Student SGD steps on synthetic data per iteration (N).")
    expert_epochs: PositiveInt = Field(2, description="Expert epochs the student's N steps must match (M).")
    max_start_epoch: PositiveInt = Field(10, description="Student starts at an expert epoch drawn from [0, T+).")
    lr_lr: PositiveFloat = Field(1e-5, description="SGD lr of the learnable synthetic learning rate.")
    batch_syn: PositiveInt | None = Field(None, description="Synthetic batch per student step; None = the whole decoded set.")

    @model_validator(mode="after")
    def _fits(self) -> MTTSettings:
        if self.max_start_epoch + self.expert_epochs > self.expert_train_epochs:
            raise ValueError(
                f"max_start_epoch ({self.max_start_epoch}) + expert_epochs ({self.expert_epochs}) exceeds expert_train_epochs "
                f"({self.expert_train_epochs}): the student's target would lie beyond the stored trajectory"
            )
        return self


class DistillConfig(_Strict):
    """How one synthetic set is made: distilled here (dm, dc, mtt) or imported from a file."""

    method: Literal["dm", "dc", "mtt", "import"] = Field(
        "dm",
        description="dm = distribution matching, dc = gradient matching (IDC with factor 2), mtt = trajectory matching, "
        "import = a precomputed file.",
    )
    ipc: PositiveInt = Field(10, description="Stored images per class.")
    factor: PositiveInt = Field(
        1, description="IDC multi-formation: each stored image holds factor x factor tiles (factor segments for signals)."
    )
    init: Literal["real", "noise"] = Field("real", description="Initialise from random real examples or Gaussian noise.")
    iterations: PositiveInt = Field(200, description="Image updates (outer iterations).")
    lr_img: PositiveFloat | None = Field(
        None, description="SGD lr of the synthetic pixels; None = the method's published default (dm 1.0, dc 0.1, mtt 1000)."
    )
    momentum_img: float = Field(0.5, ge=0.0, lt=1.0, description="Momentum of the pixel optimizer (0.5 in DC, DM and MTT).")
    batch_real: PositiveInt = Field(256, description="Real examples per class per matching step (DC, DM).")
    dsa: str = Field("auto", description="DSA strategy while matching; auto = all transforms of the data kind, 'none' = off.")
    seed: int = Field(0, description="Seed of the init, the sampled networks, the real batches and the augmentation.")
    model: ModelConfig | None = Field(
        None, description="Distillation network; None = the study's model (IDC and MTT distil with ConvNet-3, instance norm)."
    )
    dc: DCSettings = Field(default_factory=DCSettings)
    mtt: MTTSettings = Field(default_factory=MTTSettings)
    path: str | None = Field(None, description="import: a .npz or .pt file of images and labels (read without unpickling).")
    labels_path: str | None = Field(None, description="import: labels in a separate file (MTT saves images_best.pt and labels_best.pt).")
    space: Literal["normalized", "raw"] = Field(
        "normalized", description="import: images are in the dataset's normalised space, or raw (normalised on load)."
    )
    real_examples: NonNegativeInt | None = Field(
        None,
        description="import: the real sample-gradients it took to make the set, when its authors report them; "
        "None = unknown (shown as unknown: making IDC's CIFAR-10 sets took on the order of 5e8).",
    )

    @model_validator(mode="after")
    def _import_needs_path(self) -> DistillConfig:
        if self.method == "import" and not self.path:
            raise ValueError("method 'import' needs `path`: a .npz or .pt file holding the synthetic images and labels")
        if self.method != "import" and self.real_examples is not None:
            raise ValueError("real_examples is for imported sets; a set distilled here counts its own real examples")
        return self


def _synthetic_train() -> TrainConfig:
    # The paper's inner loop on distilled data (McDermott & Cummings 2023; docs/science.md), shortened from 1000 epochs for CPUs.
    return TrainConfig(
        lr=0.01, momentum=0.9, weight_decay=5e-4, batch_size=64, epochs=300, schedule="multistep", milestones=[200, 250], gamma=0.2
    )


class SyntheticConfig(_Strict):
    """Synthetic sets and how networks train on them (distilled pruning's inner loop and the evaluation protocol)."""

    sets: dict[str, DistillConfig] = Field(
        default_factory=dict, description="Named synthetic sets; mask sources refer to them as distilled.<name>."
    )
    train: TrainConfig = Field(
        default_factory=_synthetic_train,
        description="Training on a synthetic set (paper: 1000 epochs, SGD 0.01, momentum 0.9, wd 5e-4, batch 64, x0.2 at 2/3 and 5/6).",
    )
    augmentation: str = Field(
        "auto",
        description="DSA strategy when training on synthetic (and matched subset) data, written as data.dsa_strategy; "
        "auto = all of the kind's, one per batch; 'none' = off; the paper's: 'idc:color_crop_flip_scale_rotate'.",
    )
    use_learned_lr: bool = Field(
        True, description="Train on an MTT set with the lr it learned (as MTT evaluates its sets) instead of train.lr."
    )
    evaluate_runs: NonNegativeInt = Field(
        3, description="Fresh networks trained on each set, on a random real subset of its size and on noise (DD-Ranking style); 0 = skip."
    )

    @field_validator("sets")
    @classmethod
    def _names(cls, v: dict[str, DistillConfig]) -> dict[str, DistillConfig]:
        bad = [n for n in v if not n.replace("_", "").isalnum()]
        if bad:
            raise ValueError(f"synthetic set names must be letters, digits and '_' (they appear in mask source names): {bad}")
        return v


class SurfaceSpec(_Strict):
    """A 2-D loss surface per tested subnetwork and seed pair."""

    plane: Literal["copies", "random", "four_solution"] = Field(
        "copies",
        description="copies = the plane through the rewind point and the pair's two copies (their positions marked); "
        "random = filter-normalised random directions around copy A; four_solution = the paper's plane through the pair's "
        "copies A, B and the next pair's A', B' (directions (A - B) / 2 and (B' - A') / 2; A' and B' are generally off it).",
    )
    centre: Literal["midpoint", "A"] = Field(
        "midpoint",
        description="four_solution only: the plane's origin, the midpoint of A and B (the authors' distilled_loss_landscape.py) "
        "or copy A (their current multiple_lmc.py).",
    )
    resolution: PositiveInt = Field(21, description="Grid points per axis (odd, so the centre is on the grid).")
    span: PositiveFloat = Field(
        1.0,
        description="random: half-width in filter-normalised units; copies, four_solution: half-width as a multiple of 1.25 x the "
        "farthest model's coordinate (four_solution around the midpoint puts A, B at +-1, so when A', B' project within 1, "
        "1.6 gives the paper's [-2, 2]).",
    )
    split: list[str] = Field(
        default_factory=lambda: ["test"],
        description="Splits the surface is evaluated on, one pass for all: train, test, or synthetic.<set> (the decoded synthetic "
        "set <set> of synthetic.sets, as the authors' distilled_loss_landscape.py); a single name is accepted.",
    )
    examples: PositiveInt = Field(1000, description="The first N examples of each split (a fixed subset keeps surfaces cheap).")
    seed: int = Field(0, description="Seed of random directions.")

    @field_validator("resolution")
    @classmethod
    def _odd(cls, v: int) -> int:
        if v % 2 == 0:
            raise ValueError(f"resolution must be odd so the grid contains the centre; use {v - 1} or {v + 1}")
        return v

    @field_validator("split", mode="before")
    @classmethod
    def _one_or_many(cls, v: object) -> object:
        return [v] if isinstance(v, str) else v

    @field_validator("split")
    @classmethod
    def _split_names(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("name at least one split: train, test or synthetic.<set>")
        bad = [s for s in v if s not in ("train", "test") and not (s.startswith("synthetic.") and len(s) > len("synthetic."))]
        if bad:
            raise ValueError(f"unknown split(s) {bad}: use train, test or synthetic.<set> (a set named under synthetic.sets)")
        if len(set(v)) != len(v):
            raise ValueError(f"split lists a split twice: {v}")
        return v


class HessianSpec(_Strict):
    """Curvature of copy A of each tested subnetwork, in its unpruned subspace, on a fixed batch of training data."""

    examples: PositiveInt = Field(512, description="The first N training examples (the paper: one batch of 64).")
    mode: Literal["eval", "train"] = Field(
        "eval",
        description="BatchNorm during the Hessian: eval = running statistics (the project's default: the Hessian of the network "
        "as it is evaluated); train = the batch's own statistics, as the paper took it on one batch (set examples: 64).",
    )
    top_k: NonNegativeInt = Field(5, description="Largest eigenvalues by Lanczos (0 = skip).")
    tol: PositiveFloat = Field(1e-3, description="Ritz-residual tolerance relative to |lambda_1|.")
    trace_rel_tol: PositiveFloat = Field(0.02, description="Hutch++ stops when its standard error is this fraction of the trace.")
    trace_max_hvps: PositiveInt = Field(300, description="Hessian-vector-product budget of the trace.")
    density_runs: NonNegativeInt = Field(4, description="Stochastic Lanczos quadrature runs for the spectral density (0 = skip).")
    density_steps: PositiveInt = Field(40, description="Lanczos steps per SLQ run.")
    diagonal: Literal["none", "hutchinson", "exact"] = Field(
        "exact",
        description="Hessian diagonal: exact (the Gauss-Newton diagonal, C backward passes for C classes, for every parameter "
        "the network is piecewise linear in, where it equals the Hessian's; one Hessian-vector product per weight for the rest), "
        "a Hutchinson estimate (labelled, with per-entry standard errors), or none.",
    )
    diagonal_samples: PositiveInt = Field(100, description="Probes of the Hutchinson diagonal.")
    seed: int = Field(0, description="Seed of the probes and start vectors.")


class SharpnessSpec(_Strict):
    """Does a mask source prune sharp weights? The Hessian diagonal of one common network per (k, round), read at the
    weights each source removes in that round, against random removals of the same per-layer counts."""

    reference: Literal["previous", "dense"] = Field(
        "previous",
        description="The common network the diagonal is read on: previous = copy A of pair 0 of real IMP's round r-1 subnetwork "
        "(the network IMP prunes at round r; needs imp among the mask sources); dense = copy A of pair 0 of the trained dense network.",
    )
    examples: PositiveInt = Field(512, description="The first N training examples (the paper: one batch of 64).")
    mode: Literal["eval", "train"] = Field(
        "eval", description="BatchNorm during the Hessian: eval = running statistics; train = the batch's own statistics (the paper)."
    )
    diagonal: Literal["exact", "hutchinson"] = Field(
        "exact", description="exact (one product per weight unless the diagonal has a cheaper exact route) or a Hutchinson estimate."
    )
    diagonal_samples: PositiveInt = Field(100, description="Probes of the Hutchinson diagonal.")
    random_draws: PositiveInt = Field(
        1000, description="Random removals (same per-layer counts, same candidate weights) forming the null distribution."
    )
    bins: PositiveInt = Field(30, description="Histogram bins of log10 H_ii shared by every source and the random-removal band.")
    seed: int = Field(0, description="Seed of the random removals and the Hutchinson probes.")


class AnalysisConfig(_Strict):
    """Which analyses run on which tested subnetworks; results are stages like every other."""

    surface: SurfaceSpec | None = Field(None, description="A 2-D loss surface per subnetwork and pair; None = none.")
    hessian: HessianSpec | None = Field(None, description="Hessian spectrum, trace, density and diagonal per subnetwork; None = none.")
    sharpness: SharpnessSpec | None = Field(
        None, description="Hessian diagonal at the weights each mask source removes per round, against random removal; None = none."
    )
    rounds: list[NonNegativeInt] | None = Field(None, description="Rounds to analyse; None = every tested round.")
    mask_sources: list[str] | None = Field(None, description="Mask sources to analyse; None = all.")
    pairs: list[NonNegativeInt] = Field(
        default_factory=lambda: [0], description="Seed pairs (indices into stability.pairs) whose copies are analysed."
    )


class StudyConfig(_Strict):
    name: str = Field("study", description="A label for people; not part of the run id.")
    seed: int = Field(0, description="Init seed: every mask source and copy starts from this one initialisation.")
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    pruning: PruningConfig = Field(default_factory=PruningConfig)
    stability: StabilityConfig = Field(default_factory=StabilityConfig)
    sweep: SweepConfig = Field(default_factory=SweepConfig)
    synthetic: SyntheticConfig = Field(default_factory=SyntheticConfig)
    analysis: AnalysisConfig = Field(default_factory=AnalysisConfig)
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto = CUDA when present, else CPU. Not part of the run id.")

    @model_validator(mode="after")
    def _analysis_fits(self) -> StudyConfig:
        unknown = [s for s in self.analysis.mask_sources or [] if s not in self.pruning.mask_sources]
        if unknown:
            raise ValueError(f"analysis.mask_sources: {unknown} are not among pruning.mask_sources {self.pruning.mask_sources}")
        bad_pairs = [p for p in self.analysis.pairs if p >= len(self.stability.pairs)]
        if bad_pairs:
            raise ValueError(
                f"analysis.pairs: {bad_pairs} out of range; the study has {len(self.stability.pairs)} seed pair(s), indices from 0"
            )
        sharp = self.analysis.sharpness
        if sharp is not None and sharp.reference == "previous" and "imp" not in self.pruning.mask_sources:
            raise ValueError(
                "analysis.sharpness.reference='previous' reads the Hessian on real IMP's round r-1 network; "
                "add 'imp' to pruning.mask_sources or set analysis.sharpness.reference='dense'"
            )
        surface = self.analysis.surface
        if surface is not None and surface.plane == "random" and self.stability.bn_mode == "interpolate" and self.model.norm == "batch":
            raise ValueError(
                "analysis.surface.plane='random' with stability.bn_mode='interpolate': a random plane does not move BatchNorm "
                "statistics; use bn_mode 'endpoint' (copy A's statistics) or 'reestimate', or plane 'copies'"
            )
        if surface is not None:
            self._surface_fits(surface)
        return self

    def _surface_fits(self, surface: SurfaceSpec) -> None:
        if surface.plane == "four_solution" and len(self.stability.pairs) < 2:
            raise ValueError(
                "analysis.surface.plane='four_solution' needs two seed pairs (the analysed pair's copies and the next pair's); "
                f"stability.pairs has {len(self.stability.pairs)}: add one, e.g. stability.pairs=[[100, 101], [102, 103]]"
            )
        if surface.centre != "midpoint" and surface.plane != "four_solution":
            raise ValueError(f"analysis.surface.centre applies to plane 'four_solution' only; the {surface.plane!r} plane fixes its own")
        unknown = [s for s in surface.split if s.startswith("synthetic.") and s.split(".", 1)[1] not in self.synthetic.sets]
        if unknown:
            raise ValueError(
                f"analysis.surface.split: {unknown} name no synthetic set; synthetic.sets defines {sorted(self.synthetic.sets) or 'none'}"
            )

    def run_id(self) -> str:
        """Return the 12-hex-digit hash of the canonical config, without fields that do not change results."""
        payload = self.model_dump(mode="json", exclude={"name", "device"})
        blob = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:12]
