"""The evaluation engine paths and planes share: many parameter states through one network, looped or vmap-batched."""

from __future__ import annotations

from collections.abc import Iterable
from typing import cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from lmc_core.foundations.types import Splits, State
from lmc_core.train.evaluation import evaluate

STRATEGIES = ("auto", "loop", "batched")

# Memory bounds of one vmap chunk of the "batched" strategy: the stacked parameter copies, and
# the rows (alphas x examples) pushed through the network at once, which bound the activations.
_MAX_STACK_BYTES = 256 * 2**20
_MAX_ROWS = 8192  # measured: 8192 is best for the MLP; 16k-32k rows fall out of cache and lose to the loop
# Largest evaluation batches at which vmap beats the loop on CPU (measured, see choose_strategy).
_SMALL_BATCH_DENSE = 512
_SMALL_BATCH_CONV = 128
# --------------------------------------------------------------------------- evaluation strategies


def _has_conv(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.conv._ConvNd) for m in model.modules())


def choose_strategy(model: nn.Module, batch_rows: int) -> str:
    """Return "batched" when the evaluation batch is small enough for vmap to win (<= 512 rows conv-free, <= 128 with convs), else "loop".

    benchmarks/bench_path.py on the project's 2-core CPU (torch 2.13, 31 alphas, 1000 inputs,
    loop time / batched time, medians of interleaved repeats; the machine was shared, so noisy):
    MLP 40-100-100-10: batch 1000 0.74-0.93x (one run 1.4x), batch 512 ~1.2x, batch 256 ~2.5x, batch 32-64 4-7x;
    Conv1d 3x64 k5 s2 net: batch 1000 0.4-0.5x, batch 256 ~0.9x, batch 64-128 1.6-1.8x (4x under load).
    vmap saves the per-call overhead of one forward per alpha, which dominates at small batches;
    at large batches the stacked work is no faster than the loop's (bmm for linear layers), and a
    convolution with stacked weights becomes a grouped convolution, which on CPU is clearly slower.
    """
    limit = _SMALL_BATCH_CONV if _has_conv(model) else _SMALL_BATCH_DENSE
    return "batched" if batch_rows <= limit else "loop"


class _Bound(nn.Module):
    """A module that runs `worker` with the parameters and buffers of `state` (via functional_call)."""

    def __init__(self, worker: nn.Module, state: State):
        super().__init__()
        self.worker = worker
        self.state = state
        # Born in eval mode: evaluate() restores the mode it found, which must not flip the worker to train.
        self.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return cast(torch.Tensor, functional_call(self.worker, self.state, (x,), strict=True))


def eval_loop(worker: nn.Module, states: Iterable[State], splits: Splits, batch_size: int) -> list[dict[str, tuple[float, float]]]:
    """Return, per state, split -> (loss, error), one ordinary forward per state through evaluate()."""
    rows = []
    for state in states:
        bound = _Bound(worker, state)
        metrics = {name: evaluate(bound, x, y, batch_size) for name, (x, y) in splits.items()}
        rows.append({name: (m.loss, m.error) for name, m in metrics.items()})
    return rows


def chunk_size(state: State, batch_size: int) -> int:
    """Return how many alphas one vmap pass may stack, bounding stacked parameters and activation rows."""
    n_bytes = sum(t.numel() * t.element_size() for t in state.values() if t.is_floating_point())
    by_memory = max(1, _MAX_STACK_BYTES // max(1, n_bytes))
    by_rows = max(1, _MAX_ROWS // max(1, batch_size))
    return min(by_memory, by_rows)


@torch.no_grad()
def _eval_stacked(
    worker: nn.Module, chunk: list[State], x: torch.Tensor, y: torch.Tensor, batch_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Return per-state (loss, error) arrays on (x, y), evaluating all states of the chunk in one vmap pass per batch."""
    floating = [k for k, t in chunk[0].items() if t.is_floating_point()]
    stacked = {k: torch.stack([s[k] for s in chunk]) for k in floating}
    shared = {k: t for k, t in chunk[0].items() if not t.is_floating_point()}

    def forward(params: State, xb: torch.Tensor) -> torch.Tensor:
        return cast(torch.Tensor, functional_call(worker, (params, shared), (xb,), strict=True))

    batched_forward = torch.vmap(forward, in_dims=(0, None))
    c = len(chunk)
    loss_sum = torch.zeros(c, dtype=torch.float64, device=x.device)
    wrong = torch.zeros(c, dtype=torch.int64, device=x.device)
    for start in range(0, len(x), batch_size):
        xb, yb = x[start : start + batch_size], y[start : start + batch_size]
        logits = batched_forward(stacked, xb)  # (C, B, classes)
        per_example = F.cross_entropy(logits.flatten(0, 1), yb.repeat(c), reduction="none").view(c, -1)
        # Sum in float32 per state, then accumulate in float64: the same arithmetic as evaluate().
        loss_sum += per_example.sum(dim=1).double()
        wrong += (logits.argmax(dim=2) != yb).sum(dim=1)
    n = len(x)
    return (loss_sum / n).cpu().numpy(), (wrong.double() / n).cpu().numpy()


def eval_batched(worker: nn.Module, states: Iterable[State], splits: Splits, batch_size: int) -> list[dict[str, tuple[float, float]]]:
    """Return, per state, split -> (loss, error), stacking chunks of states and evaluating them with vmap."""
    rows: list[dict[str, tuple[float, float]]] = []
    chunk: list[State] = []
    size = None

    def flush() -> None:
        per_split = {name: _eval_stacked(worker, chunk, x, y, batch_size) for name, (x, y) in splits.items()}
        for i in range(len(chunk)):
            rows.append({name: (float(lo[i]), float(er[i])) for name, (lo, er) in per_split.items()})
        chunk.clear()

    for state in states:
        if size is None:
            size = chunk_size(state, batch_size)
        chunk.append(state)
        if len(chunk) == size:
            flush()
    if chunk:
        flush()
    return rows
