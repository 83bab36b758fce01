"""Dataset distillation: learn a small synthetic training set by matching what real data does to networks.

Three methods, one loop shape (sample a network, measure a matching loss between real and synthetic
data, take a step on the synthetic pixels) and one bookkeeping:
  dm   distribution matching (Zhao & Bilen 2023): mean embeddings of randomly initialised networks;
  dc   gradient matching (Zhao et al. 2021), with IDC's multi-formation and settings (Kim et al. 2022):
       per-class gradients of a network trained along the way;
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
from lmc_core.data.dsa import DSA, resolve_strategy
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
    "idc": {
        "iterations": 2000,
        "lr_img": 0.005,
        "batch_real": 64,
        "factor": 2,
        "init": "mix",
        "match": "mse",
        "net_data": "real",
        "dsa": "color_crop_cutout",
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


def gradient_distance(syn: list[torch.Tensor], real: list[torch.Tensor], metric: str) -> torch.Tensor:
    """Return DC's per-output-row cosine distance (weights only, as DC) or IDC's squared error (all parameters)."""
    total = syn[0].new_zeros(())
    for gs, gr in zip(syn, real, strict=True):  # one gradient per parameter on both sides
        if metric == "mse":
            total = total + ((gs - gr) ** 2).sum()
        elif gs.ndim > 1:
            total = total + (1 - F.cosine_similarity(gs.flatten(1), gr.flatten(1), dim=1, eps=1e-6)).sum()
    return total


class _Matcher:
    """The per-method matching steps, sharing the real-data sampling, the augmentation and the accounting."""

    def __init__(self, cfg: DistillConfig, data: Dataset, net_cfg: ModelConfig, images: torch.Tensor, labels: torch.Tensor):
        self.cfg, self.data, self.net_cfg = cfg, data, net_cfg
        self.images, self.labels = images, labels
        self.classes = list(range(data.num_classes))
        self.by_class = [torch.nonzero(data.y_train == c).flatten() for c in self.classes]
        self.dsa = DSA(resolve_strategy(cfg.dsa, data.kind), data.kind)
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
        dc = self.cfg.dc
        outer, inner = dc_loops(self.cfg.ipc)
        outer, inner = dc.outer_loop or outer, dc.inner_loop or inner
        net = self.network(it)
        params = list(net.parameters())
        net_opt = torch.optim.SGD(params, lr=dc.lr_net)
        total = 0.0
        for ol in range(outer):
            syn = self.decoded()
            loss = syn.new_zeros(())
            for c in self.classes:
                real, fake = self.augment_pair(self.real_batch(c, self.cfg.batch_real), syn[self.syn_labels == c])
                g_real = [g.detach() for g in torch.autograd.grad(F.cross_entropy(net(real), _full(real, c)), params)]
                g_syn = torch.autograd.grad(F.cross_entropy(net(fake), _full(fake, c)), params, create_graph=True)
                loss = loss + gradient_distance(list(g_syn), g_real, dc.match)
            total += self._update(loss, optimizer)
            if ol == outer - 1:
                break
            self._train_network(net, net_opt, inner)
        return total / outer

    def _train_network(self, net: nn.Module, net_opt: torch.optim.Optimizer, steps: int) -> None:
        """Move the matching network along: DC trains it on the synthetic set, IDC on real data."""
        for _ in range(steps):
            if self.cfg.dc.net_data == "real":
                idx = torch.randint(len(self.data.x_train), (self.cfg.batch_real,), generator=self.rng).to(self.data.x_train.device)
                x, y = self.data.x_train[idx], self.data.y_train[idx]
                self.real_examples += len(idx)
            else:
                x, y = self.decoded().detach(), self.syn_labels
            if self.dsa.active:
                x = self.dsa(x, self.rng)
            net_opt.zero_grad(set_to_none=True)
            F.cross_entropy(net(x), y).backward()  # type: ignore[no-untyped-call]  # torch leaves Tensor.backward unannotated
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
