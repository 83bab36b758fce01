"""The surface stage kind: a 2-D loss surface through a pair's copies (Garipov et al. 2018), around copy A (Li et al. 2018),
or on the paper's plane through four SGD solutions (McDermott & Cummings 2023, multiple_lmc.py)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from lmc_core.foundations.config import StudyConfig
from lmc_core.foundations.events import Callback, Event
from lmc_core.foundations.layout import DENSE, copies_key, rewind_key, surface_key, synthetic_key
from lmc_core.foundations.storage import save_arrays
from lmc_core.foundations.types import Masks, Splits
from lmc_core.landscape.grid import grid_axis
from lmc_core.landscape.plane import Plane, four_solution_plane, plane_through, random_plane
from lmc_core.landscape.surface import Surface, SurfaceOptions, evaluate_surface
from lmc_core.studies.plan import Stage, Subnetwork
from lmc_core.studies.run import Run
from lmc_core.studies.stages import StageKind

SYNTHETIC_PREFIX = "synthetic."
# The four models of a four_solution plane: the analysed pair's copies and the next pair's, in the paper's order t0..t3.
FOUR = ("A", "B", "A'", "B'")


def second_pair(cfg: StudyConfig, pair: int) -> int:
    """Return the seed pair whose copies complete a four_solution plane with pair `pair`'s: the next one in stability.pairs."""
    return (pair + 1) % len(cfg.stability.pairs)


def surface_splits(run: Run, names: list[str], examples: int) -> Splits:
    """Return the first `examples` examples of each named split: train, test, or synthetic.<set> (the decoded set's examples)."""
    real = run.all_splits()
    data: Splits = {}
    for name in names:
        if name.startswith(SYNTHETIC_PREFIX):
            d = run.synthetic_dataset(name[len(SYNTHETIC_PREFIX) :])
            x, y = d.x_train, d.y_train
        else:
            x, y = real[name]
        data[name] = (x[:examples], y[:examples])
    return data


def _plane(run: Run, p: dict[str, Any], masks: Masks | None) -> tuple[Plane, float, dict[str, Any]]:
    """Return the configured plane, the grid's half-width and what the stage records about the plane's models."""
    spec = run.cfg.analysis.surface
    assert spec is not None  # planned only when configured
    ckey = copies_key(p["mask"], p["k"], p["pair"])
    a, b = run.to_device(run.load_state(ckey, "a")), run.to_device(run.load_state(ckey, "b"))
    params = {n for n, _ in run.template.named_parameters()}
    extra: dict[str, Any] = {}
    if spec.plane == "random":
        return random_plane({n: v for n, v in a.items() if n in params}, masks=masks, seed=spec.seed), spec.span, extra
    if spec.plane == "copies":
        # The copies' own start: theta_k masked, with the pruned network's biases and norms under pruning.rewind="weights".
        plane = plane_through(run.to_device(run.start_state(p["mask"], p["k"])), a, b, names=("rewind", "A", "B"))
    else:
        q = second_pair(run.cfg, p["pair"])
        other = copies_key(p["mask"], p["k"], q)
        a2, b2 = run.to_device(run.load_state(other, "a")), run.to_device(run.load_state(other, "b"))
        plane = four_solution_plane(a, b, a2, b2, centre="midpoint" if spec.centre == "midpoint" else "t0", names=FOUR)
        seeds = run.cfg.stability.pairs
        which = ((p["pair"], 0), (p["pair"], 1), (q, 0), (q, 1))
        extra = {
            "pairs": [p["pair"], q],
            "models": {name: {"pair": pp, "copy": "ab"[i], "seed": seeds[pp][i]} for name, (pp, i) in zip(FOUR, which, strict=True)},
            # A and B span the plane; A' and B' are drawn at their least-squares projections, which are not the models.
            "residual": plane.info["residual"],
            "nominal": {k: [c + 0.0 for c in v] for k, v in plane.info["nominal"].items()},  # + 0.0: -0.0 reads as 0
            "centre": spec.centre,
        }
    reach = max(max(abs(x), abs(y)) for x, y in plane.points.values())
    return plane, spec.span * 1.25 * reach, extra  # a margin beyond the farthest model


def run_surface(run: Run, stage: Stage, out: Path, callback: Callback) -> dict[str, Any]:
    """Evaluate the configured plane on a grid and at each model's point; save the surface, return its plane, span and loss range."""
    p, spec = stage.params, run.cfg.analysis.surface
    assert spec is not None  # planned only when configured
    masks = None if p["mask"] == DENSE else run.load_masks(p["mask"])
    plane, span, extra = _plane(run, p, masks)
    params = {n for n, _ in run.template.named_parameters()}
    # bn_mode="endpoint" means copy A's statistics, as on the path, whatever the plane's centre (the rewind point's are
    # the init's, the four-solution midpoint's a mean); "interpolate" moves the plane's own (each spanning copy's at its
    # point), "reestimate" recomputes them from real training data on every split, the synthetic one included.
    a = run.load_state(copies_key(p["mask"], p["k"], p["pair"]), "a")
    buffers_a = run.to_device({n: v for n, v in a.items() if n not in params})
    axis = grid_axis(span, spec.resolution)
    data = surface_splits(run, spec.split, spec.examples)

    def progress(done: int, total: int, partial: Surface) -> None:
        callback(Event(stage.key, done, total))

    options = SurfaceOptions(
        masks=masks,
        bn_mode=run.cfg.stability.bn_mode,
        calibration=run.data.x_train,
        bn_batches=run.cfg.stability.bn_batches,
        batch_size=run.cfg.train.eval_batch_size,
        callback=progress,
        endpoint_buffers=buffers_a or None,
    )
    surface = evaluate_surface(run.template, plane, axis, axis, data, options)
    save_arrays(out / "surface.npz", surface.to_arrays())
    at_points = _at_points(run, plane, data, replace(options, callback=None))
    first = spec.split[0]
    return {
        "plane": spec.plane,
        "points": {k: list(v) for k, v in plane.points.items()},
        "span": float(span),
        "resolution": spec.resolution,
        "split": first,
        "splits": list(spec.split),
        "examples": len(data[first][0]),
        "examples_per_split": {s: len(x) for s, (x, _) in data.items()},
        "loss_min": float(np.nanmin(surface.loss[first])),
        "loss_max": float(np.nanmax(surface.loss[first])),
        "loss_range": {s: [float(np.nanmin(v)), float(np.nanmax(v))] for s, v in surface.loss.items()},
        "at_points": at_points,
        "bn_mode": surface.bn_mode,
        "strategy": surface.strategy,
        "cosine": plane.info.get("cosine"),
        **extra,
    }


def _at_points(run: Run, plane: Plane, data: Splits, options: SurfaceOptions) -> dict[str, dict[str, dict[str, float]]]:
    """Return the plane's loss and error at each model's point, per split: {split: {model: {"loss", "error"}}}.

    The grid need not pass through the models; these are the values a marker on the figure stands for. For a model off
    the plane (a four-solution plane's A', B') it is the value at its projection, not the model's own.
    """
    out: dict[str, dict[str, dict[str, float]]] = {s: {} for s in data}
    for name, (x, y) in plane.points.items():
        at = evaluate_surface(run.template, plane, [x], [y], data, options)
        for s in data:
            out[s][name] = {"loss": float(at.loss[s][0, 0]), "error": float(at.error[s][0, 0])}
    return out


def plan_surface(cfg: StudyConfig, s: Subnetwork, pair: int) -> Stage | None:
    """Return the surface stage of subnetwork `s` and seed pair `pair` when `analysis.surface` is configured.

    It needs the copies, the rewind point (a 'copies' plane passes through it), the next pair's copies for a
    'four_solution' plane, and the synthetic set of every synthetic.<set> split.
    """
    spec = cfg.analysis.surface
    if spec is None:
        return None
    key = surface_key(s.mask, s.k, pair)
    deps = [copies_key(s.mask, s.k, pair), rewind_key(s.k)]
    if spec.plane == "four_solution":
        deps.append(copies_key(s.mask, s.k, second_pair(cfg, pair)))
    deps += [synthetic_key(name[len(SYNTHETIC_PREFIX) :]) for name in spec.split if name.startswith(SYNTHETIC_PREFIX)]
    return Stage(key, "surface", tuple(deps), {"mask": s.mask, "k": s.k, "pair": pair})


SURFACE = StageKind(run=run_surface, plan=plan_surface)
