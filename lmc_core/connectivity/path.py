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

import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from lmc_core.connectivity.batchnorm import bn_buffer_keys, calibration_batches, make_worker, reestimate_bn, resolve_bn_mode
from lmc_core.connectivity.engine import STRATEGIES, choose_strategy, eval_batched, eval_loop
from lmc_core.foundations.types import Masks, State

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
            split: {"error": error_barrier(self.error[split]), "loss": loss_barrier(self.loss[split], self.alphas)} for split in self.loss
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
        assert calibration is not None  # resolve_bn_mode refuses "reestimate" without calibration inputs
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
