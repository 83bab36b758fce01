"""The loss and error surface of a model over a grid on a plane, with BatchNorm handled per point and the strategy chosen per
model."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from lmc_core.connectivity.batchnorm import bn_buffer_keys, calibration_batches, resolve_bn_mode
from lmc_core.connectivity.engine import STRATEGIES, choose_strategy, chunk_size
from lmc_core.foundations.heap import roomy_heap
from lmc_core.foundations.types import Masks, Splits, State
from lmc_core.landscape.evaluator import EvaluatorSettings, PlaneEvaluator, Row
from lmc_core.landscape.grid import coarse_to_fine_2d
from lmc_core.landscape.plane import Plane, to_jsonable

# --------------------------------------------------------------------------- surfaces


@dataclass
class Surface:
    """Loss and error over a grid of plane coordinates: arrays [len(xs), len(ys)] per split (NaN where not yet evaluated)."""

    xs: np.ndarray
    ys: np.ndarray
    loss: dict[str, np.ndarray]
    error: dict[str, np.ndarray]
    bn_mode: str
    strategy: str
    kind: str
    info: dict[str, Any]
    points: dict[str, tuple[float, float]]
    done: np.ndarray | None = None

    @property
    def evaluated(self) -> np.ndarray:
        """Boolean [len(xs), len(ys)]: which grid points have been evaluated (a NaN loss there is a real NaN)."""
        if self.done is not None:
            return np.asarray(self.done, dtype=bool)
        first = next(iter(self.loss.values()))
        evaluated: np.ndarray = ~np.isnan(first)
        return evaluated

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Return a flat dict for np.savez (no pickles): xs, ys, loss_<split>, error_<split>, and "meta" (a JSON string)."""
        arrays = {"xs": np.asarray(self.xs, dtype=np.float64), "ys": np.asarray(self.ys, dtype=np.float64)}
        for split in self.loss:
            arrays[f"loss_{split}"] = np.asarray(self.loss[split])
            arrays[f"error_{split}"] = np.asarray(self.error[split])
        meta = {
            "bn_mode": self.bn_mode,
            "strategy": self.strategy,
            "kind": self.kind,
            "info": to_jsonable(self.info),
            "points": {k: [float(v[0]), float(v[1])] for k, v in self.points.items()},
        }
        arrays["meta"] = np.array(json.dumps(meta))
        arrays["done"] = self.evaluated
        return arrays

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> Surface:
        """Return the Surface that `to_arrays` flattened (also accepts an np.load NpzFile)."""
        keys = list(arrays.keys())
        splits = [k[len("loss_") :] for k in keys if k.startswith("loss_")]
        meta = json.loads(str(np.asarray(arrays["meta"])))
        return cls(
            xs=np.asarray(arrays["xs"]),
            ys=np.asarray(arrays["ys"]),
            loss={s: np.asarray(arrays[f"loss_{s}"]) for s in splits},
            error={s: np.asarray(arrays[f"error_{s}"]) for s in splits},
            bn_mode=meta["bn_mode"],
            strategy=meta["strategy"],
            kind=meta["kind"],
            info=meta["info"],
            points={k: (float(v[0]), float(v[1])) for k, v in meta["points"].items()},
            done=np.asarray(arrays["done"], dtype=bool) if "done" in keys else None,
        )


def _check_axis(v: Sequence[float] | np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(v, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0 or not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be a non-empty 1-D array of finite coordinates, got shape {arr.shape}")
    return arr


# A strategy's evaluation of a list of points (PlaneEvaluator.evaluate_loop or evaluate_stacked), and what stores its rows.
_Run = Callable[[Sequence[tuple[float, float]], Splits, int], list[Row]]
_Record = Callable[[list[tuple[int, int]], list[Row]], None]


def _calibrate(
    run: dict[str, _Run],
    order: list[tuple[int, int]],
    xs: np.ndarray,
    ys: np.ndarray,
    data: Splits,
    batch_size: int,
    stack: int,
    record: _Record,
) -> tuple[str, dict[str, float], int]:
    """Evaluate the first grid points with both strategies, timing each; return (the faster, ms per point, points done)."""
    timings: dict[str, float] = {}
    start = 0
    for name, n in (("loop", 2), ("loop", max(8, stack)), ("batched", stack)):  # the first two points warm the kernels up
        idx = order[start : start + n]
        t0 = time.perf_counter()
        record(idx, run[name]([(xs[i], ys[j]) for i, j in idx], data, batch_size))
        if start > 0:
            timings[name] = 1e3 * (time.perf_counter() - t0) / len(idx)
        start += len(idx)
    return min(timings, key=timings.__getitem__), timings, start


@dataclass(frozen=True)
class SurfaceOptions:
    """How `evaluate_surface` evaluates a plane; the defaults are what a study uses unless configured."""

    masks: Masks | None = None
    bn_mode: str = "auto"
    calibration: torch.Tensor | None = None
    bn_batches: int = 8
    bn_batch_size: int = 128
    batch_size: int = 1000
    strategy: str = "auto"
    chunk: int | None = None
    callback: Callable[[int, int, Surface], None] | None = None
    reuse_first_layer: bool = False
    fused: bool = True
    # The BatchNorm statistics bn_mode="endpoint" holds at every point (a study passes copy A's, whatever the plane's
    # centre); None: the plane's buffers (the centre's), else the template's. The other modes ignore it.
    endpoint_buffers: State | None = None


def evaluate_surface(
    model: nn.Module,
    plane: Plane,
    xs: Sequence[float] | np.ndarray,
    ys: Sequence[float] | np.ndarray,
    data: Splits,
    options: SurfaceOptions | None = None,
) -> Surface:
    """Return loss and error at every (xs[i], ys[j]) of `plane`, per split of `data`, evaluated coarse to fine.

    `model` is a template and is never modified (a private copy is evaluated). `options` (a
    SurfaceOptions) holds everything else. Masks (`masks`, else the plane's) keep pruned weights exactly 0 at every point. BatchNorm:
    "reestimate" (what "auto" means for BN nets) recomputes the statistics at every point from the
    first `bn_batches` batches of `calibration`, centre included; "endpoint" uses one set of
    statistics everywhere: `endpoint_buffers` when given (a study's copy A), else the centre's (the
    plane's buffers, as Li et al.'s code does), else the template's;
    "interpolate" moves them by the plane's rule and is only defined for planes spanned by solutions
    (`plane_through`, `four_solution_plane`); random and PCA planes refuse it with a ValueError.
    strategy "loop" evaluates one point per forward, "batched" stacks up to `chunk` points per vmap
    pass (see `landscape.evaluator.PlaneEvaluator`), "auto" times both on the first grid points and keeps the
    faster (recorded in `info["strategy_timings_ms_per_point"]`); grids too small to measure use
    `connectivity.engine.choose_strategy`'s rule. `callback(done, total, partial)` is called after each
    chunk of points (coarse subgrid first) with a copy of the partial Surface. `reuse_first_layer`
    computes the first Conv/Linear's three parts z0, z1, z2 once per batch for the whole surface and
    each point's output as z0 + a z1 + b z2 (exact up to rounding, since the layer is linear in its
    weights and the masks are fixed); it refuses models with parameters or statistics before that
    layer, and switches itself off (noted in `info`) when the cache would exceed 512 MiB.
    `fused` (float32 conv nets whose forward is a chain of Conv2d/BatchNorm/ReLU/pool/Flatten/Linear,
    see `fused_chain`; not with `reuse_first_layer`) evaluates with running-statistics BatchNorm folded
    into the convolutions, ReLU fused into them and, for strategy "batched", several points per grouped
    convolution; values equal the module's up to float32 rounding and the centre is evaluated by the
    module itself (bit-exact); `info["fused"]` says whether it ran ("on", "off" or why not).
    """
    opts = options or SurfaceOptions()
    strategy, masks, bn_mode, calibration = opts.strategy, opts.masks, opts.bn_mode, opts.calibration
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    if not data:
        raise ValueError("pass at least one split, e.g. data={'test': (x_test, y_test)}")
    xs, ys = _check_axis(xs, "xs"), _check_axis(ys, "ys")
    params = dict(model.named_parameters())
    if params.keys() != plane.centre.keys():
        missing, extra = sorted(params.keys() - plane.centre.keys()), sorted(plane.centre.keys() - params.keys())
        raise ValueError(f"the plane does not match the model's parameters: missing {missing[:5]}, unknown {extra[:5]}")
    mode = resolve_bn_mode(model, bn_mode, calibration)
    if mode == "interpolate" and (plane.buffer_d1 is None or plane.buffer_d2 is None):
        raise ValueError(
            f"bn_mode='interpolate' is undefined on a {plane.kind!r} plane (its directions do not move BatchNorm statistics); "
            "use bn_mode='reestimate' with calibration inputs, or 'endpoint' for the centre's statistics"
        )
    use_masks = masks if masks is not None else plane.masks
    worker_base = {k: v.detach().clone() for k, v in model.state_dict().items() if k not in params}
    given = opts.endpoint_buffers if mode == "endpoint" else None
    if given is not None:
        missing = [k for k in bn_buffer_keys(model) if k not in given]
        if missing:
            raise ValueError(f"endpoint_buffers lack the model's BatchNorm statistics {missing[:5]}")
    for source in (plane.buffers, given):
        for k, v in (source or {}).items():
            if k in worker_base:
                worker_base[k] = v.detach().to(worker_base[k].device, worker_base[k].dtype)
    if mode == "reestimate":
        assert calibration is not None  # resolve_bn_mode refuses "reestimate" without calibration inputs
        batches = calibration_batches(calibration, opts.bn_batches, opts.bn_batch_size)
    else:
        batches = []
    settings = EvaluatorSettings(
        mode=mode, base=worker_base, masks=use_masks, calibration=batches, reuse_first_layer=opts.reuse_first_layer, fused=opts.fused
    )
    with roomy_heap():
        return _evaluate_surface(model, plane, xs, ys, data, opts, settings)


def _evaluate_surface(
    model: nn.Module, plane: Plane, xs: np.ndarray, ys: np.ndarray, data: Splits, opts: SurfaceOptions, settings: EvaluatorSettings
) -> Surface:
    evaluator = PlaneEvaluator(model, plane, settings)
    mode, batches = settings.mode, list(settings.calibration)
    bn_batch_size, batch_size, strategy, chunk, callback = opts.bn_batch_size, opts.batch_size, opts.strategy, opts.chunk, opts.callback
    evaluator.prepare(data, batch_size)
    rows_batch = min(batch_size, max(len(x) for x, _ in data.values()))
    stack = int(chunk) if chunk is not None else chunk_size(dict(evaluator.worker.state_dict()), rows_batch)

    order = coarse_to_fine_2d(len(xs), len(ys))
    total = len(order)
    loss = {s: np.full((len(xs), len(ys)), np.nan) for s in data}
    error = {s: np.full((len(xs), len(ys)), np.nan) for s in data}
    done_mask = np.zeros((len(xs), len(ys)), dtype=bool)
    info = dict(plane.info)
    if mode == "reestimate":
        info["bn"] = {"batches": len(batches), "batch_size": int(bn_batch_size), "calibration_inputs": int(sum(len(b) for b in batches))}
    elif mode == "endpoint":
        info["bn"] = {"statistics": "given" if opts.endpoint_buffers is not None else "centre" if plane.buffers else "template"}
    info["first_layer_reuse"] = evaluator.reuse_note
    info["fused"] = evaluator.plan_note
    surface = Surface(
        xs=xs,
        ys=ys,
        loss=loss,
        error=error,
        bn_mode=mode,
        strategy=strategy,
        kind=plane.kind,
        info=info,
        points=dict(plane.points),
        done=done_mask,
    )

    def record(idx: list[tuple[int, int]], rows: list[Row]) -> None:
        for (i, j), row in zip(idx, rows, strict=True):  # the evaluators return one row per point
            for s in data:
                loss[s][i, j], error[s][i, j] = row[s]
            done_mask[i, j] = True

    run: dict[str, _Run] = {"loop": evaluator.evaluate_loop, "batched": evaluator.evaluate_stacked}
    start = 0
    if strategy == "auto" and (stack < 2 or total < 4 * stack + 8):
        strategy = choose_strategy(model, rows_batch) if stack >= 2 else "loop"
    if strategy == "auto":
        # Measure, then choose (measured on CPU: the loop beats vmap for convolutions and large batches,
        # vmap wins for small dense nets on small batches). Calibration points are real grid points.
        strategy, timings, start = _calibrate(run, order, xs, ys, data, batch_size, stack, record)
        surface.info["strategy_timings_ms_per_point"] = timings
    surface.strategy = strategy + ("+first_layer" if evaluator.reuse is not None else "")
    step = stack if strategy == "batched" else int(chunk) if chunk is not None else 8
    step = max(1, step)
    while start < total:
        idx = order[start : start + step]
        record(idx, run[strategy]([(xs[i], ys[j]) for i, j in idx], data, batch_size))
        start += len(idx)
        if callback is not None:
            partial = Surface(
                xs=xs.copy(),
                ys=ys.copy(),
                loss={s: v.copy() for s, v in loss.items()},
                error={s: v.copy() for s, v in error.items()},
                bn_mode=mode,
                strategy=surface.strategy,
                kind=plane.kind,
                info=dict(surface.info),
                points=dict(plane.points),
                done=done_mask.copy(),
            )
            callback(start, total, partial)
    return surface
