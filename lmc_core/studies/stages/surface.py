"""The surface stage kind: a 2-D loss surface through a pair's copies (Garipov et al. 2018) or around copy A (Li et al. 2018)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from lmc_core.foundations.config import StudyConfig
from lmc_core.foundations.events import Callback, Event
from lmc_core.foundations.layout import DENSE, copies_key, rewind_key, surface_key
from lmc_core.foundations.storage import save_arrays
from lmc_core.foundations.types import Splits
from lmc_core.landscape.grid import grid_axis
from lmc_core.landscape.plane import plane_through, random_plane
from lmc_core.landscape.surface import Surface, SurfaceOptions, evaluate_surface
from lmc_core.studies.plan import Stage, Subnetwork
from lmc_core.studies.run import Run
from lmc_core.studies.stages import StageKind


def run_surface(run: Run, stage: Stage, out: Path, callback: Callback) -> dict[str, Any]:
    """Evaluate the configured plane on a grid; save the surface, return its plane, span and loss range."""
    p, spec = stage.params, run.cfg.analysis.surface
    assert spec is not None  # planned only when configured
    masks = None if p["mask"] == DENSE else run.load_masks(p["mask"])
    ckey = copies_key(p["mask"], p["k"], p["pair"])
    a, b = run.to_device(run.load_state(ckey, "a")), run.to_device(run.load_state(ckey, "b"))
    params = {n for n, _ in run.template.named_parameters()}
    # bn_mode="endpoint" means copy A's statistics, as on the path, whatever the plane's centre (the rewind point's are
    # the init's); "interpolate" moves the plane's own (each copy's at its point), "reestimate" recomputes them.
    buffers_a = {n: v for n, v in a.items() if n not in params}
    if spec.plane == "copies":
        start = run.to_device(run.load_state(rewind_key(p["k"])))
        if masks:
            start = {n: v * masks[n].to(v.device, v.dtype) if n in masks else v for n, v in start.items()}
        plane = plane_through(start, a, b, names=("rewind", "A", "B"))
        reach = max(max(abs(x), abs(y)) for x, y in plane.points.values())
        span = spec.span * 1.25 * reach  # a margin beyond the farthest model
    else:
        plane = random_plane({n: v for n, v in a.items() if n in params}, masks=masks, seed=spec.seed)
        span = spec.span
    axis = grid_axis(span, spec.resolution)
    x, y = run.all_splits()[spec.split]
    data: Splits = {spec.split: (x[: spec.examples], y[: spec.examples])}

    def progress(done: int, total: int, partial: Surface) -> None:
        callback(Event(stage.key, done, total))

    surface = evaluate_surface(
        run.template,
        plane,
        axis,
        axis,
        data,
        SurfaceOptions(
            masks=masks,
            bn_mode=run.cfg.stability.bn_mode,
            calibration=run.data.x_train,
            bn_batches=run.cfg.stability.bn_batches,
            batch_size=run.cfg.train.eval_batch_size,
            callback=progress,
            endpoint_buffers=buffers_a or None,
        ),
    )
    save_arrays(out / "surface.npz", surface.to_arrays())
    loss = surface.loss[spec.split]
    return {
        "plane": spec.plane,
        "points": {k: list(v) for k, v in plane.points.items()},
        "span": float(span),
        "resolution": spec.resolution,
        "split": spec.split,
        "examples": len(data[spec.split][0]),
        "loss_min": float(np.nanmin(loss)),
        "loss_max": float(np.nanmax(loss)),
        "bn_mode": surface.bn_mode,
        "strategy": surface.strategy,
        "cosine": plane.info.get("cosine"),
    }


def plan_surface(cfg: StudyConfig, s: Subnetwork, pair: int) -> Stage | None:
    """Return the surface stage of subnetwork `s` and seed pair `pair` when `analysis.surface` is configured.

    It needs the copies and the rewind point (a 'copies' plane passes through it).
    """
    if cfg.analysis.surface is None:
        return None
    key = surface_key(s.mask, s.k, pair)
    return Stage(key, "surface", (copies_key(s.mask, s.k, pair), rewind_key(s.k)), {"mask": s.mask, "k": s.k, "pair": pair})


SURFACE = StageKind(run=run_surface, plan=plan_surface)
