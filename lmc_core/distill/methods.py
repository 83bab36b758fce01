"""Dataset distillation: learn a small synthetic training set by matching what real data does to networks.

Three methods, one loop shape (sample a network, measure a matching loss between real and synthetic
data, take a step on the synthetic pixels) and one bookkeeping:
  dm   distribution matching (Zhao & Bilen 2023): mean embeddings of randomly initialised networks;
  dc   gradient matching (Zhao et al. 2021): per-class gradients of a network trained along the way; with
       IDC's settings (Kim et al. 2022) the match takes the convolution weights only, by squared error, and
       the network trains between matches on real data with momentum and CutMix (DCSettings);
  mtt  trajectory matching (Cazenavette et al. 2022): N student steps on synthetic data from an expert's
       epoch t must land near the expert's epoch t + M; the student's lr is learned too.
Real and synthetic batches get the same DSA draw (siamese augmentation). Every iteration's loss is
emitted as an event and kept in the set's provenance; `real_examples` counts the real examples the
distillation consumed (for MTT, the experts' training), so training-point ratios can be honest.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from lmc_core.data.dataset import Dataset
from lmc_core.data.dsa import DSA, cutmix, resolve_strategy
from lmc_core.distill.experts import Trajectories, unflatten
from lmc_core.distill.synthetic import SyntheticSet, decode, decode_labels, import_synthetic, init_from_real, init_noise
from lmc_core.foundations.config import DistillConfig, ModelConfig
from lmc_core.foundations.events import Callback, Event, no_callback
from lmc_core.foundations.seeding import derive_seed, generator
from lmc_core.models import build_model, prunable_modules

# The published settings of each method's reference code (github.com/VICO-UoE/DatasetCondensation,
# github.com/GeorgeCazenavette/mtt-distillation, github.com/snu-mllab/Efficient-Dataset-Condensation), for the record
# and for GPU-scale configs; the CPU presets scale iterations down and retune the pixel lr (lmc_core/studies/presets.py).
PUBLISHED: dict[str, dict[str, Any]] = {
    "dm": {"iterations": 20000, "lr_img": 1.0, "batch_real": 256, "init": "real", "dsa": "color_crop_cutout_flip_scale_rotate"},
    "dc": {
        "iterations": 1000,
        "lr_img": 0.1,
        "lr_net": 0.01,
        "batch_real": 256,
        "init": "noise",
        "loops": "get_loops(ipc)",
        "match": "cos",
    },
    "idc": {  # CIFAR: condense.py --reproduce (misc/reproduce.py, argument.py)
        "iterations": 2000,
        "matches_per_network": 100,
        "lr_img": 0.005,
        "batch_real": 64,
        "batch_syn_max": 128,
        "factor": 2,
        "init": "mix",
        "match": "mse",
        "layers": "conv",
        "net_data": "real",
        "n_data": 2000,
        "net_batch": 64,
        "net_lr": 0.01,
        "net_momentum": 0.9,
        "net_weight_decay": 5e-4,
        "net_cutmix": 0.5,
        "dsa": "idc:color_crop_cutout",
        "net_dsa": "idc:color_crop",
        "network": "ConvNet-3, instance norm, width 128",
    },
    "mtt": {
        "iterations": 5000,
        "lr_img": 1000.0,
        "lr_lr": 1e-5,
        "lr_teacher": 0.01,
        "syn_steps": 20,
        "expert_epochs": 3,
        "max_start_epoch": 25,
        "experts": 100,
        "expert_train_epochs": 50,
        "expert_batch": 256,
        "init": "real",
    },
}
DEFAULT_LR_IMG: dict[str, float] = {method: PUBLISHED[method]["lr_img"] for method in ("dm", "dc", "mtt")}

# DC's get_loops(ipc): (outer loop, inner loop) per images-per-class.
DC_LOOPS = {1: (1, 1), 10: (10, 50), 20: (20, 25), 30: (30, 20), 40: (40, 15), 50: (50, 10)}


@dataclass
class Distilled:
    """A synthetic set and what making it cost."""

    synthetic: SyntheticSet
    losses: list[float]
    real_examples: int | None  # None: an imported set whose cost its source does not report
    seconds: float


def dc_loops(ipc: int) -> tuple[int, int]:
    """Return DC's (outer, inner) loop lengths for `ipc`: the table entry at or below it."""
    return DC_LOOPS[max(k for k in DC_LOOPS if k <= ipc)]


def distill(
    cfg: DistillConfig,
    data: Dataset,
    model_cfg: ModelConfig,
    *,
    experts: Trajectories | None = None,
    stage: str = "distill",
    callback: Callback = no_callback,
) -> Distilled:
    """Return the synthetic set `cfg` describes, distilled from (or imported against) `data`."""
    t0 = time.perf_counter()
    if cfg.method == "import":
        assert cfg.path is not None  # the config refuses an import without a path
        s = import_synthetic(cfg.path, data, labels_path=cfg.labels_path, factor=cfg.factor, space=cfg.space)
        return Distilled(s, [], cfg.real_examples, time.perf_counter() - t0)
    net_cfg = cfg.model or model_cfg
    _check_network(net_cfg)
    init = init_from_real if cfg.init == "real" else init_noise
    syn = init(data, cfg.ipc, cfg.factor, cfg.seed)
    images = syn.images.detach().clone().to(data.x_train.device).requires_grad_(True)
    labels = syn.labels.to(data.x_train.device)
    matcher = _Matcher(cfg, data, net_cfg, images, labels)
    if cfg.method == "mtt":
        if experts is None:
            raise ValueError("method 'mtt' needs expert trajectories (lmc_core.distill.experts.train_experts)")
        step, lr = matcher.mtt_step(experts), matcher.syn_lr
    else:
        step, lr = (matcher.dm_step if cfg.method == "dm" else matcher.dc_step), None
    optimizer = torch.optim.SGD([images], lr=cfg.lr_img or DEFAULT_LR_IMG[cfg.method], momentum=cfg.momentum_img)
    losses: list[float] = []
    callback(Event(stage, 0, cfg.iterations))
    for it in range(cfg.iterations):
        loss = step(it, optimizer)
        if not torch.isfinite(torch.tensor(loss)):
            raise FloatingPointError(
                f"{stage}: the matching loss became {loss} at iteration {it}; lower lr_img (now {optimizer.param_groups[0]['lr']})"
            )
        losses.append(loss)
        callback(Event(stage, it + 1, cfg.iterations, {"loss": loss}))
    learned = None if lr is None else float(lr.detach())
    result = SyntheticSet(
        images=images.detach().cpu(),
        labels=labels.cpu(),
        num_classes=data.num_classes,
        kind=data.kind,
        factor=cfg.factor,
        lr=learned,
        provenance={
            "method": cfg.method,
            "settings": cfg.model_dump(mode="json"),
            "network": net_cfg.model_dump(mode="json"),
            "source": data.describe(),
            "seed": cfg.seed,
            "loss_curve": losses,
            "learned_lr": learned,
        },
    )
    real = matcher.real_examples + (int(experts.info.get("examples", 0)) if experts is not None and cfg.method == "mtt" else 0)
    result.provenance["real_examples"] = real
    return Distilled(result, losses, real, time.perf_counter() - t0)


def _check_network(net_cfg: ModelConfig) -> None:
    if net_cfg.norm == "batch":
        raise ValueError(
            "distillation networks cannot use BatchNorm (a few synthetic images per class carry no batch statistics); "
            "set distill model norm to 'instance' as IDC and MTT do, or 'none'"
        )


def _full(x: torch.Tensor, c: int) -> torch.Tensor:
    return torch.full((len(x),), c, dtype=torch.long, device=x.device)


def embed(net: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Return the features `net` feeds its classifier (the input of its last Conv/Linear), flattened."""
    _, classifier = prunable_modules(net)[-1]
    captured: list[torch.Tensor] = []
    handle = classifier.register_forward_pre_hook(lambda module, args: captured.append(args[0]))
    try:
        net(x)
    finally:
        handle.remove()
    return captured[0].flatten(1)


CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def matched_parameters(net: nn.Module, layers: str) -> list[torch.Tensor]:
    """Return the parameters whose gradients enter the match, in `named_modules()` order.

    "all": every parameter (DC matches them all; its cosine then skips 1-D tensors). "conv": the weight of
    every convolution, and nothing else: IDC's match (condense.py `matchloss`, defaults --bias False, --fc
    False) skips 1-D gradients (biases, norm parameters) and 2-D ones (the linear classifier).
    """
    if layers == "all":
        return list(net.parameters())
    if layers != "conv":
        raise ValueError(f"layers must be 'all' or 'conv', got {layers!r}")
    params = [m.weight for _, m in net.named_modules() if isinstance(m, CONV_TYPES)]
    if not params:
        raise ValueError(
            f"dc.layers='conv' matches convolution weights only, but the distillation network ({type(net).__name__}) has "
            "no convolution; use dc.layers='all' or a convolutional network"
        )
    return params


def gradient_distance(syn: list[torch.Tensor], real: list[torch.Tensor], metric: str) -> torch.Tensor:
    """Return the distance between two lists of gradients, summed over the tensors given.

    "cos": DC's distance_wb, per output row sum_i 1 - <s_i, r_i> / (|s_i| |r_i|) of each tensor flattened to
    (out, -1); 1-D tensors (biases, norm parameters) contribute 0. "mse": IDC's dist(method='mse'),
    sum (s - r)^2 over every element of every tensor given, unnormalised. Which tensors are given is the
    caller's choice (`matched_parameters`).
    """
    total = syn[0].new_zeros(())
    for gs, gr in zip(syn, real, strict=True):  # one gradient per parameter on both sides
        if metric == "mse":
            total = total + ((gs - gr) ** 2).sum()
        elif gs.ndim > 1:
            total = total + (1 - F.cosine_similarity(gs.flatten(1), gr.flatten(1), dim=1, eps=1e-6)).sum()
    return total


def gradient_match(net: nn.Module, params: list[torch.Tensor], real: torch.Tensor, fake: torch.Tensor, c: int, metric: str) -> torch.Tensor:
    """Return gradient_distance between the cross-entropy gradients, w.r.t. `params` only, of class-`c` batches `fake` and `real`.

    Differentiable w.r.t. `fake` (the synthetic images); the real gradients are constants.
    """
    g_real = [g.detach() for g in torch.autograd.grad(F.cross_entropy(net(real), _full(real, c)), params)]
    g_syn = torch.autograd.grad(F.cross_entropy(net(fake), _full(fake, c)), params, create_graph=True)
    return gradient_distance(list(g_syn), g_real, metric)


class _Matcher:
    """The per-method matching steps, sharing the real-data sampling, the augmentation and the accounting."""

    def __init__(self, cfg: DistillConfig, data: Dataset, net_cfg: ModelConfig, images: torch.Tensor, labels: torch.Tensor):
        self.cfg, self.data, self.net_cfg = cfg, data, net_cfg
        self.images, self.labels = images, labels
        self.classes = list(range(data.num_classes))
        self.by_class = [torch.nonzero(data.y_train == c).flatten() for c in self.classes]
        self.dsa = DSA(resolve_strategy(cfg.dsa, data.kind), data.kind)
        net_dsa = cfg.dc.net_dsa
        self.net_dsa = self.dsa if net_dsa is None else DSA(resolve_strategy(net_dsa, data.kind), data.kind)
        if cfg.method == "dc" and cfg.dc.net_cutmix and data.kind == "vector":
            raise ValueError(
                f"dc.net_cutmix pastes a box of an image or a segment of a signal; dataset {data.name!r} holds vectors: "
                "set dc.net_cutmix to 0"
            )
        self.rng = generator(cfg.seed, "distill")  # real batches, augmentation draws and expert picks, in a fixed order
        self.real_examples = 0
        self.syn_lr: torch.Tensor | None = None
        self.syn_labels = decode_labels(labels, cfg.factor, data.kind)

    # ---- shared pieces ----------------------------------------------------------------------
    def network(self, it: int) -> nn.Module:
        seed = derive_seed(self.cfg.seed, f"net-{it}")
        return build_model(self.net_cfg, self.data.input_shape, self.data.num_classes, seed).to(self.data.x_train.device)

    def real_batch(self, c: int, n: int) -> torch.Tensor:
        pool = self.by_class[c]
        pick = pool[torch.randperm(len(pool), generator=self.rng)[:n].to(pool.device)]
        self.real_examples += len(pick)
        return self.data.x_train[pick]

    def decoded(self) -> torch.Tensor:
        return decode(self.images, self.cfg.factor, self.data.kind)

    def augment_pair(self, real: torch.Tensor, syn: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.dsa.active:
            return real, syn
        seed = int(torch.randint(2**62, (1,), generator=self.rng))  # one draw, replayed for both batches
        return (
            self.dsa(real, torch.Generator().manual_seed(seed), shared=True),
            self.dsa(syn, torch.Generator().manual_seed(seed), shared=True),
        )

    def _update(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> float:
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]  # torch leaves Tensor.backward unannotated
        optimizer.step()
        return float(loss.detach())

    # ---- distribution matching --------------------------------------------------------------
    def dm_step(self, it: int, optimizer: torch.optim.Optimizer) -> float:
        net = self.network(it).requires_grad_(False)
        syn = self.decoded()
        loss = syn.new_zeros(())
        for c in self.classes:
            real, fake = self.augment_pair(self.real_batch(c, self.cfg.batch_real), syn[self.syn_labels == c])
            loss = loss + ((embed(net, real).mean(0) - embed(net, fake).mean(0)) ** 2).sum()
        return self._update(loss, optimizer)

    # ---- gradient matching ------------------------------------------------------------------
    def dc_step(self, it: int, optimizer: torch.optim.Optimizer) -> float:
        """Sample a network, then `outer` times: one image update on the summed per-class matches, a network update between."""
        dc = self.cfg.dc
        outer, inner = dc_loops(self.cfg.ipc)
        outer, inner = dc.outer_loop or outer, dc.inner_loop or inner
        net = self.network(it)
        params = matched_parameters(net, dc.layers)
        net_opt = self.network_optimizer(net)
        total = 0.0
        for ol in range(outer):
            syn = self.decoded()
            loss = syn.new_zeros(())
            for c in self.classes:
                real, fake = self.augment_pair(self.real_batch(c, self.cfg.batch_real), syn[self.syn_labels == c])
                loss = loss + gradient_match(net, params, real, fake, c, dc.match)
            total += self._update(loss, optimizer)
            if ol == outer - 1:
                break  # the network is discarded after the last match: training it could not change the images
            self._train_network(net, net_opt, inner)
        return total / outer

    def network_optimizer(self, net: nn.Module) -> torch.optim.Optimizer:
        """Return the matching network's SGD (DC: plain; IDC: momentum 0.9, weight decay 5e-4), one per sampled network."""
        dc = self.cfg.dc
        return torch.optim.SGD(net.parameters(), lr=dc.lr_net, momentum=dc.net_momentum, weight_decay=dc.net_weight_decay)

    def network_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Return one training batch of the matching network: `net_batch` random real examples, or the decoded synthetic set."""
        if self.cfg.dc.net_data == "real":
            n = self.cfg.dc.net_batch or self.cfg.batch_real
            idx = torch.randint(len(self.data.x_train), (n,), generator=self.rng).to(self.data.x_train.device)
            self.real_examples += len(idx)
            return self.data.x_train[idx], self.data.y_train[idx]
        return self.decoded().detach(), self.syn_labels

    def _train_network(self, net: nn.Module, net_opt: torch.optim.Optimizer, steps: int) -> None:
        """Move the matching network along by `steps` SGD steps: DC trains it on the synthetic set, IDC on real data.

        Each batch is augmented per sample with `net_dsa`, then CutMixed with probability `net_cutmix`, as IDC's
        train_epoch does (loss lam * CE(y) + (1 - lam) * CE(y_perm)); the draws come from the distillation stream.
        """
        p_cutmix = self.cfg.dc.net_cutmix
        for _ in range(steps):
            x, y = self.network_batch()
            if self.net_dsa.active:
                with torch.no_grad():
                    x = self.net_dsa(x, self.rng)
            net_opt.zero_grad(set_to_none=True)
            # No draw at all when CutMix is off, so DC's stream of real batches and augmentations stays as it was.
            if p_cutmix and float(torch.rand((), generator=self.rng)) < p_cutmix:
                x, y_a, y_b, lam = cutmix(x, y, self.rng)
                out = net(x)
                loss = lam * F.cross_entropy(out, y_a) + (1 - lam) * F.cross_entropy(out, y_b)
            else:
                loss = F.cross_entropy(net(x), y)
            loss.backward()  # type: ignore[no-untyped-call]  # torch leaves Tensor.backward unannotated
            net_opt.step()

    # ---- trajectory matching ----------------------------------------------------------------
    def mtt_step(self, experts: Trajectories) -> Callable[[int, torch.optim.Optimizer], float]:
        mtt = self.cfg.mtt
        if experts.epochs < mtt.max_start_epoch + mtt.expert_epochs:
            raise ValueError(
                f"experts hold {experts.epochs} epochs; MTT needs max_start_epoch + expert_epochs = "
                f"{mtt.max_start_epoch + mtt.expert_epochs}"
            )
        net = self.network(0)
        names = [n for n, _ in net.named_parameters()]
        if names != experts.names:
            raise ValueError("the expert trajectories were trained with a different network; retrain them for this distillation network")
        self.syn_lr = torch.tensor(mtt.lr_teacher, device=self.images.device, requires_grad=True)
        lr_opt = torch.optim.SGD([self.syn_lr], lr=mtt.lr_lr, momentum=0.5)
        device = self.images.device

        def step(it: int, optimizer: torch.optim.Optimizer) -> float:
            assert self.syn_lr is not None  # set above, before this step can run
            e = int(torch.randint(experts.experts, (1,), generator=self.rng))
            t = int(torch.randint(mtt.max_start_epoch, (1,), generator=self.rng))
            start = experts.params[e, t].to(device)
            target = experts.params[e, t + mtt.expert_epochs].to(device)
            syn = self.decoded()
            batch = mtt.batch_syn or len(syn)
            w = start.clone().requires_grad_(True)
            for _ in range(mtt.syn_steps):
                idx = torch.randperm(len(syn), generator=self.rng)[:batch].to(device)
                x = self.dsa(syn[idx], self.rng) if self.dsa.active else syn[idx]
                out = functional_call(net, unflatten(w, experts.names, experts.shapes), (x,))
                grad = torch.autograd.grad(F.cross_entropy(out, self.syn_labels[idx]), w, create_graph=True)[0]
                w = w - self.syn_lr * grad
            loss = ((w - target) ** 2).sum() / ((start - target) ** 2).sum()
            lr_opt.zero_grad(set_to_none=True)
            value = self._update(loss, optimizer)
            lr_opt.step()
            if not float(self.syn_lr.detach()) > 0:  # a negative step size turns the student's descent into ascent
                raise FloatingPointError(
                    f"the learned synthetic lr became {float(self.syn_lr.detach()):.3g} at iteration {it}; "
                    f"lower mtt.lr_lr (now {mtt.lr_lr})"
                )
            return value

        return step
