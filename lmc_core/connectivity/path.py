"""Linear interpolation between two trained copies and the barrier along that path.

The stability test of Frankle et al. (2020) and McDermott & Cummings (2023): evaluate
theta(alpha) = (1 - alpha) * theta_A + alpha * theta_B on a grid of alphas and report the
barrier, both as Frankle's error barrier and as Entezari et al.'s (2022) loss barrier.

Three things decide whether the barrier is meaningful rather than an artefact:
* BatchNorm: interpolated weights do not match interpolated running statistics, so by default
  the statistics are re-estimated at every alpha, the endpoints included (an unbiased barrier);
* masks: a sparse pair must stay sparse along the path, so the mask is re-applied at every alpha;
* the caller's model is only a template: every evaluation runs through `functional_call` on a
  private copy, so its parameters, buffers, flags and mode are never touched.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from lmc_core.train.evaluation import evaluate

State = dict[str, torch.Tensor]
Masks = dict[str, torch.Tensor]

BN_MODES = ("auto", "reestimate", "interpolate", "endpoint")
STRATEGIES = ("auto", "loop", "batched")

# Memory bounds of one vmap chunk of the "batched" strategy: the stacked parameter copies, and
# the rows (alphas x examples) pushed through the network at once, which bound the activations.
_MAX_STACK_BYTES = 256 * 2**20
_MAX_ROWS = 8192  # measured: 8192 is best for the MLP; 16k-32k rows fall out of cache and lose to the loop
# Largest evaluation batches at which vmap beats the loop on CPU (measured, see choose_strategy).
_SMALL_BATCH_DENSE = 512
_SMALL_BATCH_CONV = 128


# --------------------------------------------------------------------------- grid and states


def alpha_grid(n: int) -> np.ndarray:
    """Return n evenly spaced interpolation coefficients in [0, 1]; the first is exactly 0.0, the last exactly 1.0."""
    if n < 2:
        raise ValueError(f"an interpolation grid needs at least 2 points (both endpoints), got {n}")
    return np.linspace(0.0, 1.0, int(n))


def interpolate_state(a: State, b: State, alpha: float) -> State:
    """Return (1 - alpha) * a + alpha * b for floating tensors, integer buffers from a; alpha 0 / 1 give a / b bitwise."""
    _check_same_keys(a, b)
    alpha = float(alpha)
    out: State = {}
    for key, ta in a.items():
        tb = b[key]
        if ta.shape != tb.shape:
            raise ValueError(f"{key}: shapes differ between the two states, {tuple(ta.shape)} vs {tuple(tb.shape)}")
        if not ta.is_floating_point():
            # Counters such as BatchNorm's num_batches_tracked have no meaningful midpoint.
            out[key] = ta.clone()
        elif alpha == 0.0:
            out[key] = ta.clone()  # exact even for -0.0, inf and nan, which a + 0 * (b - a) would not keep
        elif alpha == 1.0:
            out[key] = tb.to(ta.dtype, copy=True)
        else:
            out[key] = torch.lerp(ta, tb.to(ta.dtype), alpha)
    return out


def _check_same_keys(a: State, b: State) -> None:
    if a.keys() != b.keys():
        only_a, only_b = sorted(a.keys() - b.keys()), sorted(b.keys() - a.keys())
        raise ValueError(f"the two states have different keys: only in A {only_a[:5]}, only in B {only_b[:5]}")


def path_mask(masks: tuple[Masks | None, Masks | None]) -> Masks | None:
    """Return the mask to apply along the path: the shared mask, or the union of supports (with a warning) when they differ.

    None (or a missing key) means dense, so the union with a dense side is dense there.
    """
    ma, mb = masks
    if ma is None and mb is None:
        return None
    if ma is not None and mb is not None and _masks_equal(ma, mb):
        return {k: v.bool() for k, v in ma.items()}
    warnings.warn(
        "the two copies have different masks, so the path crosses different supports; "
        "interpolation gives the union of the supports and the union mask is applied "
        "(the interpolated networks are denser than either endpoint)",
        UserWarning,
        stacklevel=3,
    )
    if ma is None or mb is None:
        return None
    # A key in only one mask is dense on the other side, hence dense in the union.
    return {k: ma[k].bool() | mb[k].bool() for k in ma.keys() & mb.keys()}


def _masks_equal(ma: Masks, mb: Masks) -> bool:
    return ma.keys() == mb.keys() and all(torch.equal(ma[k].bool(), mb[k].bool()) for k in ma)


def apply_mask(state: State, mask: Masks | None) -> State:
    """Return `state` with every masked-out entry set to exactly 0 (the mask wins over any stored value)."""
    if mask is None:
        return state
    out = dict(state)
    for key, m in mask.items():
        if key not in state:
            raise KeyError(f"mask key {key!r} is not in the state (masks are keyed by parameter name, e.g. 'net.0.weight')")
        t = state[key]
        if m.shape != t.shape:
            raise ValueError(f"mask {key!r} has shape {tuple(m.shape)} but the tensor has {tuple(t.shape)}")
        # where(), not multiplication: -w * 0 is -0.0 and nan * 0 is nan; pruned weights must be exactly +0.
        out[key] = torch.where(m.to(t.device, torch.bool), t, torch.zeros((), dtype=t.dtype, device=t.device))
    return out


def path_states(
    state_a: State,
    state_b: State,
    alphas: np.ndarray,
    masks: tuple[Masks | None, Masks | None] = (None, None),
    keep_from_a: Iterable[str] = (),
) -> Iterator[State]:
    """Yield the interpolated state at each alpha with the path mask applied; keys in `keep_from_a` stay copy A's at every alpha."""
    mask = path_mask(masks)
    keep = list(keep_from_a)
    for alpha in np.asarray(alphas, dtype=np.float64):
        state = apply_mask(interpolate_state(state_a, state_b, float(alpha)), mask)
        for key in keep:
            state[key] = state_a[key].clone()
        yield state


# --------------------------------------------------------------------------- barriers


def error_barrier(errors: np.ndarray) -> float:
    """Return Frankle et al. (2020)'s barrier: max_alpha err(alpha) - (err(0) + err(1)) / 2."""
    e = np.asarray(errors, dtype=np.float64)
    if e.ndim != 1 or e.size < 2:
        raise ValueError(f"an error curve needs at least the two endpoints, got shape {e.shape}")
    return float(e.max() - 0.5 * (e[0] + e[-1]))


def loss_barrier(losses: np.ndarray, alphas: np.ndarray) -> float:
    """Return Entezari et al. (2022)'s barrier: max_alpha [L(alpha) - ((1 - alpha) L(0) + alpha L(1))]."""
    loss = np.asarray(losses, dtype=np.float64)
    a = np.asarray(alphas, dtype=np.float64)
    if loss.shape != a.shape or loss.ndim != 1 or loss.size < 2:
        raise ValueError(f"losses {loss.shape} and alphas {a.shape} must be the same 1-D curve with both endpoints")
    if a[0] != 0.0 or a[-1] != 1.0:
        raise ValueError(f"the loss barrier needs the endpoints alpha=0 and alpha=1, got {a[0]} .. {a[-1]}")
    chord = (1.0 - a) * loss[0] + a * loss[-1]
    return float(np.max(loss - chord))


@dataclass
class PathResult:
    """Loss and error along the linear path, per split, and the BatchNorm mode they were measured with."""

    alphas: np.ndarray
    loss: dict[str, np.ndarray]
    error: dict[str, np.ndarray]
    bn_mode: str

    def barriers(self) -> dict[str, dict[str, float]]:
        """Return split -> {"error": Frankle error barrier, "loss": Entezari loss barrier}."""
        return {
            split: {"error": error_barrier(self.error[split]), "loss": loss_barrier(self.loss[split], self.alphas)}
            for split in self.loss
        }

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Return a flat dict for np.savez: "alphas", "loss_<split>", "error_<split>"."""
        arrays = {"alphas": np.asarray(self.alphas)}
        for split in self.loss:
            arrays[f"loss_{split}"] = np.asarray(self.loss[split])
            arrays[f"error_{split}"] = np.asarray(self.error[split])
        return arrays

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], bn_mode: str) -> PathResult:
        """Return the PathResult that `to_arrays` flattened (also accepts an np.load NpzFile)."""
        keys = list(arrays.keys())
        splits = [k[len("loss_") :] for k in keys if k.startswith("loss_")]
        return cls(
            alphas=np.asarray(arrays["alphas"]),
            loss={s: np.asarray(arrays[f"loss_{s}"]) for s in splits},
            error={s: np.asarray(arrays[f"error_{s}"]) for s in splits},
            bn_mode=bn_mode,
        )


# --------------------------------------------------------------------------- BatchNorm


def has_batchnorm(model: nn.Module) -> bool:
    """Return True when the model contains any BatchNorm layer."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def _bn_modules(model: nn.Module) -> list[tuple[str, nn.modules.batchnorm._BatchNorm]]:
    """Return the BatchNorm layers that keep running statistics, by module name."""
    return [
        (name, m)
        for name, m in model.named_modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
    ]


def bn_buffer_keys(model: nn.Module) -> list[str]:
    prefix = lambda name: f"{name}." if name else ""  # noqa: E731
    return [f"{prefix(n)}{buf}" for n, _ in _bn_modules(model) for buf in ("running_mean", "running_var", "num_batches_tracked")]


def calibration_batches(calibration: torch.Tensor, bn_batches: int, bn_batch_size: int) -> list[torch.Tensor]:
    """Return the first `bn_batches` consecutive batches of `bn_batch_size` inputs (fixed order, so re-estimation is deterministic)."""
    if bn_batches < 1 or bn_batch_size < 1:
        raise ValueError(f"bn_batches and bn_batch_size must be positive, got {bn_batches} and {bn_batch_size}")
    batches = [calibration[i * bn_batch_size : (i + 1) * bn_batch_size] for i in range(bn_batches)]
    batches = [b for b in batches if len(b) > 0]
    if not batches:
        raise ValueError("the calibration set is empty: pass training inputs to re-estimate BatchNorm statistics")
    return batches


def reestimate_bn(worker: nn.Module, state: State, batches: list[torch.Tensor]) -> State:
    """Return `state` with fresh BN statistics: a cumulative average (momentum=None) over `batches`, as swa_utils.update_bn.

    `worker` is a private copy whose BN momenta are already None. Only the BN layers run in train mode,
    so dropout does not perturb the statistics (identical to update_bn for dropout-free nets).
    """
    state = dict(state)
    for name, _ in _bn_modules(worker):
        p = f"{name}." if name else ""
        # Fresh tensors: the forward updates them in place, and they must not alias another alpha's state.
        state[p + "running_mean"] = torch.zeros_like(state[p + "running_mean"])
        state[p + "running_var"] = torch.ones_like(state[p + "running_var"])
        state[p + "num_batches_tracked"] = torch.zeros_like(state[p + "num_batches_tracked"])
    bns = [m for _, m in _bn_modules(worker)]
    for m in bns:
        m.train()
    try:
        with torch.no_grad():
            for xb in batches:
                functional_call(worker, state, (xb,), strict=True)
    finally:
        for m in bns:
            m.eval()
    return state


def make_worker(model: nn.Module, reestimate: bool) -> nn.Module:
    """Return a private eval-mode copy of the template, so nothing the caller holds is ever modified."""
    worker = copy.deepcopy(model)
    worker.eval()
    worker.requires_grad_(False)
    if reestimate:
        for _, bn in _bn_modules(worker):
            bn.momentum = None  # cumulative moving average, as torch.optim.swa_utils.update_bn
    return worker


def resolve_bn_mode(model: nn.Module, bn_mode: str, calibration: torch.Tensor | None) -> str:
    if bn_mode not in BN_MODES:
        raise ValueError(f"bn_mode must be one of {BN_MODES}, got {bn_mode!r}")
    if not has_batchnorm(model):
        return "none"
    mode = "reestimate" if bn_mode == "auto" else bn_mode
    if mode == "reestimate" and calibration is None:
        raise ValueError(
            "the model has BatchNorm and bn_mode='reestimate' (the default for BN nets) needs training inputs: "
            "pass calibration=x_train (a tensor on the model's device), or choose bn_mode='interpolate' or 'endpoint'"
        )
    return mode


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
        return functional_call(self.worker, self.state, (x,), strict=True)


def eval_loop(worker: nn.Module, states: Iterable[State], splits, batch_size: int) -> list[dict[str, tuple[float, float]]]:
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
def _eval_stacked(worker: nn.Module, chunk: list[State], x: torch.Tensor, y: torch.Tensor, batch_size: int):
    """Return per-state (loss, error) arrays on (x, y), evaluating all states of the chunk in one vmap pass per batch."""
    floating = [k for k, t in chunk[0].items() if t.is_floating_point()]
    stacked = {k: torch.stack([s[k] for s in chunk]) for k in floating}
    shared = {k: t for k, t in chunk[0].items() if not t.is_floating_point()}

    def forward(params: State, xb: torch.Tensor) -> torch.Tensor:
        return functional_call(worker, (params, shared), (xb,), strict=True)

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


def eval_batched(worker: nn.Module, states: Iterable[State], splits, batch_size: int) -> list[dict[str, tuple[float, float]]]:
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


# --------------------------------------------------------------------------- the path


def evaluate_path(
    model: nn.Module,
    state_a: State,
    state_b: State,
    splits: dict[str, tuple[torch.Tensor, torch.Tensor]],
    alphas: np.ndarray,
    *,
    bn_mode: str = "auto",
    calibration: torch.Tensor | None = None,
    bn_batches: int = 8,
    bn_batch_size: int = 128,
    masks: tuple[Masks | None, Masks | None] = (None, None),
    batch_size: int = 1000,
    strategy: str = "auto",
) -> PathResult:
    """Return loss and error of theta(alpha) = (1 - alpha) theta_A + alpha theta_B on every split (Frankle et al. 2020, Sec. 2).

    `model` is a template and is never modified. BatchNorm statistics follow `bn_mode` at every alpha,
    endpoints included: "reestimate" (auto for BN nets) recomputes them from `calibration`, "interpolate"
    interpolates them with the weights, "endpoint" keeps copy A's. Masks are re-applied at every alpha.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    if not splits:
        raise ValueError("pass at least one split, e.g. splits={'test': (x_test, y_test)}")
    alphas = np.asarray(alphas, dtype=np.float64)
    if alphas.ndim != 1 or alphas.size == 0:
        raise ValueError(f"alphas must be a non-empty 1-D array, got shape {alphas.shape}")
    _check_same_keys(state_a, state_b)
    mode = resolve_bn_mode(model, bn_mode, calibration)
    if strategy == "auto":
        strategy = choose_strategy(model, min(batch_size, max(len(x) for x, _ in splits.values())))

    worker = make_worker(model, reestimate=mode == "reestimate")
    keep = bn_buffer_keys(worker) if mode == "endpoint" else ()
    states: Iterable[State] = path_states(state_a, state_b, alphas, masks, keep_from_a=keep)
    if mode == "reestimate":
        batches = calibration_batches(calibration, bn_batches, bn_batch_size)
        states = (reestimate_bn(worker, s, batches) for s in states)

    run = eval_batched if strategy == "batched" else eval_loop
    rows = run(worker, states, splits, batch_size)
    return PathResult(
        alphas=alphas,
        loss={name: np.array([r[name][0] for r in rows]) for name in splits},
        error={name: np.array([r[name][1] for r in rows]) for name in splits},
        bn_mode=mode,
    )
