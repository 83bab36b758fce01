"""The study config: one pydantic model that the CLI parses, the API validates and the run id hashes.

Every field has a default, so a preset is a small set of overrides. Fields use the field's words:
a *mask source* produces one mask per pruning *round*; a subnetwork (mask, *rewind step* k) is
trained as two *copies* that differ only in SGD noise (data order and augmentation); the linear
*path* between the copies gives the *barrier*.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, PositiveFloat, PositiveInt, field_validator, model_validator


class _Strict(BaseModel):
    """Unknown keys are errors: a typo in a config must never silently fall back to a default."""

    model_config = ConfigDict(extra="forbid", validate_default=True)


class DataConfig(_Strict):
    name: str = Field("mnist1d", description="Dataset registry key: mnist1d, digits, teacher, cifar10, cifar100, mnist, fashion_mnist, npz.")
    path: str | None = Field(None, description="File or folder for datasets read from local files (CIFAR archive folder, IDX folder, .npz file).")
    normalize: bool = Field(True, description="Standardise each input channel with the training split's mean and std.")
    augmentation: Literal["none", "shift", "crop_flip"] = Field(
        "none", description="Training-time augmentation: 'shift' = random circular shift of 1-D signals; 'crop_flip' = padded random crop + horizontal flip of images."
    )
    max_shift: NonNegativeInt = Field(3, description="Largest circular shift (samples) for 'shift'.")
    crop_padding: NonNegativeInt = Field(4, description="Zero padding (pixels) before the random crop for 'crop_flip'.")
    train_size: PositiveInt | None = Field(None, description="Use a class-balanced subset of this many training examples (chosen with `seed`).")
    seed: int = Field(0, description="Seed of the training subset and of procedurally generated datasets.")


class ModelConfig(_Strict):
    arch: Literal["mlp", "convnet", "resnet10", "resnet18"] = "mlp"
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
    epochs: PositiveInt | None = Field(20, description="Training length in epochs (one of epochs / steps).")
    steps: PositiveInt | None = Field(None, description="Training length in optimizer steps; overrides epochs when set.")
    schedule: Literal["constant", "cosine", "multistep"] = "cosine"
    milestones: list[PositiveFloat] = Field(default_factory=list, description="multistep: epochs at which the lr is multiplied by gamma.")
    gamma: PositiveFloat = 0.1
    warmup_steps: NonNegativeInt = Field(0, description="Linear warm-up from 0 over this many steps, then the schedule.")
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
        description="Mask sources to study: dense (round 0 only), imp (magnitude pruning of the trained copy A), random (random masks with IMP's per-layer counts).",
    )
    rounds: NonNegativeInt = Field(2, description="Pruning rounds after the dense round 0; sparsity after r rounds is 1 - (1 - rate)^r.")
    rate: float = Field(0.2, gt=0.0, lt=1.0, description="Fraction of the remaining weights removed per round.")
    scope: Literal["global", "layerwise"] = Field("global", description="Rank magnitudes across all prunable layers, or within each layer.")
    keep_first_dense: bool = Field(False, description="Never prune the first layer.")
    keep_last_dense: bool = Field(False, description="Never prune the classifier layer.")
    rewind_steps: list[NonNegativeInt] = Field(default_factory=lambda: [0], description="Rewind steps k: 0 rewinds to the init (the paper), k > 0 is late rewinding.")
    seed: int = Field(0, description="Seed of random masks.")

    @field_validator("mask_sources")
    @classmethod
    def _unique_sources(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("list at least one mask source, e.g. ['dense']")
        if len(set(v)) != len(v):
            raise ValueError(f"mask sources repeat: {v}")
        from .mask_sources import MASK_SOURCES  # the registry imports models, which import this module

        unknown = [s for s in v if s not in MASK_SOURCES]
        if unknown:
            raise ValueError(f"unknown mask source(s) {unknown}; registered: {sorted(MASK_SOURCES)}")
        return v

    @field_validator("rewind_steps")
    @classmethod
    def _unique_steps(cls, v: list[int]) -> list[int]:
        if not v:
            raise ValueError("list at least one rewind step, e.g. [0]")
        return sorted(set(v))


class StabilityConfig(_Strict):
    pairs: list[tuple[int, int]] = Field(
        default_factory=lambda: [(100, 101)],
        description="SGD-noise seed pairs; copy seed s drives both its data order and its augmentation. Pair 0's copy A is the one IMP prunes.",
    )
    alphas: PositiveInt = Field(31, ge=2, description="Evenly spaced interpolation coefficients in [0, 1], both endpoints included.")
    splits: list[Literal["train", "test"]] = Field(default_factory=lambda: ["test", "train"])
    bn_mode: Literal["auto", "reestimate", "interpolate", "endpoint"] = Field(
        "auto", description="BatchNorm statistics along the path: re-estimate at every alpha (auto for BN nets), interpolate the running stats, or keep copy A's."
    )
    bn_batches: PositiveInt = Field(8, description="Calibration batches for bn_mode='reestimate'.")
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
        default_factory=lambda: ["dense"], description="Masks to sweep: 'dense' or '<source>-k<K>-r<R>', e.g. 'imp-k0-r2' (the mask of IMP round 2 found with rewind step 0)."
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
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto = CUDA when present, else CPU. Not part of the run id.")

    def run_id(self) -> str:
        """Return the 12-hex-digit hash of the canonical config, without fields that do not change results."""
        payload = self.model_dump(mode="json", exclude={"name", "device"})
        blob = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


def load_config(source: str | dict[str, Any]) -> StudyConfig:
    """Return a validated StudyConfig from a dict or a path to a JSON or YAML file."""
    if isinstance(source, dict):
        return StudyConfig.model_validate(source)
    from pathlib import Path

    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path} (give a .json or .yaml study config, or --preset NAME)")
    text = path.read_text()
    if path.suffix in {".yaml", ".yml"}:
        import yaml

        data = yaml.safe_load(text)
    else:
        data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a study config must be a mapping of fields, got {type(data).__name__}")
    return StudyConfig.model_validate(data)
