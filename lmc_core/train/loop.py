"""Training with controlled SGD noise.

SGD noise is exactly two random streams: the data order (`data_seed`) and the augmentation
(`augment_seed`). The init is fixed by the caller (the model's weights), so "two copies with
different SGD noise" are two calls with the same starting state and mask and different noise seeds.

The whole split lives on the device as one tensor and batches are gathered by index: these small
models are bound by per-step Python overhead (measured: docs/performance.md), so there is no DataLoader.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from lmc_core.data.augment import BatchAugmenter
from lmc_core.data.dataset import Dataset
from lmc_core.data.dsa import cutmix
from lmc_core.foundations.config import TrainConfig
from lmc_core.foundations.events import Callback, Event, no_callback
from lmc_core.foundations.seeding import generator
from lmc_core.foundations.types import Masks, State
from lmc_core.prune.magnitude import apply_masks


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; carries the step so the user can lower the lr or add warm-up."""

    def __init__(self, stage: str, step: int, loss: float):
        self.stage, self.step, self.loss = stage, step, loss
        super().__init__(
            f"{stage}: training diverged at step {step} (loss = {loss}); lower train.lr, add train.warmup_steps, "
            "or check the data normalisation. Stages finished before this one are kept."
        )


@dataclass
class TrainResult:
    """Final weights (on CPU) and the bookkeeping a study records for one training run."""

    state: State
    start_step: int
    end_step: int
    examples: int  # sample-gradient evaluations spent: the unit of the paper's training-points accounting
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)  # one row per epoch: step, lr, train_loss


def steps_per_epoch(cfg: TrainConfig, n_train: int) -> int:
    """Return optimizer steps per epoch: every example once, the last batch partial (`drop_last` drops it instead)."""
    if n_train < cfg.batch_size and cfg.drop_last:
        raise ValueError(
            f"train.batch_size = {cfg.batch_size} exceeds the {n_train} training examples and drop_last drops every batch; "
            "lower the batch size or set drop_last to false"
        )
    if cfg.drop_last:
        return n_train // cfg.batch_size
    return -(-n_train // cfg.batch_size)


def total_steps(cfg: TrainConfig, n_train: int) -> int:
    """Return the schedule's length T in steps (train.steps, else epochs x steps per epoch)."""
    if cfg.steps is not None:
        return cfg.steps
    assert cfg.epochs is not None  # TrainConfig refuses a config with neither
    return cfg.epochs * steps_per_epoch(cfg, n_train)


def lr_at(cfg: TrainConfig, step: int, total: int, spe: int) -> float:
    """Return the learning rate for optimizer step `step` (0-based) of a `total`-step run."""
    if cfg.schedule == "cosine":
        factor = 0.5 * (1.0 + math.cos(math.pi * step / total))
    elif cfg.schedule == "multistep":
        factor = cfg.gamma ** sum(step >= m * spe for m in cfg.milestones)
    else:
        factor = 1.0
    if step < cfg.warmup_steps:
        factor *= (step + 1) / cfg.warmup_steps
    return cfg.lr * factor


def make_optimizer(params: list[nn.Parameter], cfg: TrainConfig) -> torch.optim.Optimizer:
    """Return the configured optimizer with fresh state (children start with fresh momentum buffers)."""
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov, weight_decay=cfg.weight_decay)


class BatchStream:
    """Endless training batches: a fresh permutation per epoch from the data-order stream, then augmentation.

    An epoch is `steps_per_epoch` batches; unless `drop_last`, its last batch holds the remainder, so
    every example is seen once per epoch (as a PyTorch DataLoader does by default). `examples` counts
    the examples handed out, the exact figure a study's training-points accounting records.

    With `cutmix` > 0 a batch is CutMixed with that probability and its targets become the mixed
    class probabilities, so `F.cross_entropy(logits, target)` is CutMix's loss either way. The
    CutMix draws come from the augmentation stream, after the batch's augmentation.
    """

    def __init__(
        self,
        data: Dataset,
        batch_size: int,
        data_seed: int,
        augment_seed: int,
        augmenter: BatchAugmenter,
        cutmix: float = 0.0,
        drop_last: bool = False,
    ):
        if cutmix and data.kind == "vector":
            raise ValueError(
                f"cutmix pastes a box of an image or a segment of a signal; dataset {data.name!r} holds vectors: set cutmix to 0"
            )
        self.x, self.y = data.x_train, data.y_train
        self.num_classes = data.num_classes
        self.cutmix = cutmix
        self.batch_size = batch_size
        self.per_epoch = len(self.x) // batch_size if drop_last else -(-len(self.x) // batch_size)
        self.examples = 0
        self.order_rng = generator(data_seed, "data-order")
        self.augment_rng = generator(augment_seed, "augmentation")
        self.augmenter = augmenter
        self._order = torch.empty(0, dtype=torch.long)
        self._pos = self.per_epoch

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self._pos == self.per_epoch:
            self._order = torch.randperm(len(self.x), generator=self.order_rng).to(self.x.device)
            self._pos = 0
        idx = self._order[self._pos * self.batch_size : (self._pos + 1) * self.batch_size]
        self._pos += 1
        self.examples += len(idx)
        xb, yb = self.x[idx], self.y[idx]
        if self.augmenter.active:
            xb = self.augmenter(xb, self.augment_rng)
        if self.cutmix and float(torch.rand((), generator=self.augment_rng)) < self.cutmix:
            xb, y_a, y_b, lam = cutmix(xb, yb, self.augment_rng)
            return xb, lam * F.one_hot(y_a, self.num_classes).float() + (1 - lam) * F.one_hot(y_b, self.num_classes).float()
        return xb, yb


def train(
    model: nn.Module,
    data: Dataset,
    cfg: TrainConfig,
    augmenter: BatchAugmenter,
    *,
    data_seed: int,
    augment_seed: int,
    masks: Masks | None = None,
    start_step: int = 0,
    end_step: int | None = None,
    stage: str = "train",
    callback: Callback = no_callback,
) -> TrainResult:
    """Train `model` in place from schedule step `start_step` to `end_step` (default: the end) and return the result.

    A run that starts at k > 0 continues the lr schedule of the full run from step k, with fresh
    optimizer state (Frankle et al. 2020's children). Masked weights are zeroed before the first
    step and after every optimizer step, so they stay exactly zero.
    """
    spe = steps_per_epoch(cfg, len(data.x_train))
    total = total_steps(cfg, len(data.x_train))
    end = total if end_step is None else end_step
    if not 0 <= start_step <= end <= total:
        raise ValueError(f"{stage}: steps must satisfy 0 <= start ({start_step}) <= end ({end}) <= schedule length ({total})")
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = make_optimizer(params, cfg)
    batches = BatchStream(data, cfg.batch_size, data_seed, augment_seed, augmenter, cfg.cutmix, cfg.drop_last)
    model.train()
    apply_masks(model, masks)
    history: list[dict[str, float]] = []
    window: list[torch.Tensor] = []  # per-step losses, checked once per epoch to avoid a device sync per step
    t0 = time.perf_counter()
    callback(Event(stage, 0, end - start_step))
    for step in range(start_step, end):
        lr = lr_at(cfg, step, total, spe)
        for group in optimizer.param_groups:
            group["lr"] = lr
        xb, yb = next(batches)
        loss = F.cross_entropy(model(xb), yb)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]  # torch leaves Tensor.backward unannotated
        optimizer.step()
        apply_masks(model, masks)
        window.append(loss.detach())
        done = step + 1 - start_step
        if len(window) == spe or step + 1 == end:
            losses = torch.stack(window)
            finite = torch.isfinite(losses)
            if not bool(finite.all()):
                first = int((~finite).nonzero()[0])
                raise TrainingDiverged(stage, step + 1 - len(window) + first, float(losses[first]))
            row = {"step": step + 1, "lr": lr, "train_loss": float(losses.mean())}
            history.append(row)
            window = []
            callback(Event(stage, done, end - start_step, {"train_loss": row["train_loss"], "lr": lr}))
    state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
    return TrainResult(
        state=state,
        start_step=start_step,
        end_step=end,
        examples=batches.examples,
        seconds=time.perf_counter() - t0,
        history=history,
    )
