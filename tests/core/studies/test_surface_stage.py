"""The surface stage on a BatchNorm network: every point uses the statistics the study's bn_mode names (issue 13).

With bn_mode="endpoint" that is copy A's running statistics, as on the path, so the surface at copy A's
coordinates is copy A itself; with "interpolate" on the plane through the copies, each copy's own
statistics at its point. The template's (initial) statistics must never leak in.
"""

from typing import Any

import pytest
import torch

from lmc_core.foundations.config import StudyConfig
from lmc_core.foundations.layout import copies_key, surface_key
from lmc_core.studies.run import Run
from lmc_core.studies.stages import surface as surface_stage
from lmc_core.train.evaluation import evaluate

EXAMPLES = 300

STUDY: dict[str, Any] = {
    "name": "surface-bn-tiny",
    "data": {"name": "digits"},
    "model": {"arch": "convnet", "depth": 2, "width": 8, "norm": "batch"},
    "train": {"lr": 0.05, "batch_size": 64, "epochs": 3},
    "pruning": {"mask_sources": ["dense", "imp"], "rounds": 1, "rewind_steps": [0]},
    "stability": {"pairs": [[1, 2]], "alphas": 3, "splits": ["test"], "bn_mode": "endpoint"},
    "analysis": {"surface": {"resolution": 3, "examples": EXAMPLES}},
}

CASES = [("random", "endpoint"), ("copies", "endpoint"), ("copies", "interpolate")]


@pytest.fixture(scope="module", params=CASES, ids=[f"{p}-{m}" for p, m in CASES])
def finished(request, tmp_path_factory):
    """A finished tiny BN study, and what the surface stage handed `evaluate_surface` for each surface key."""
    plane_kind, bn_mode = request.param
    cfg = StudyConfig.model_validate(
        {
            **STUDY,
            "stability": {**STUDY["stability"], "bn_mode": bn_mode},
            "analysis": {"surface": {**STUDY["analysis"]["surface"], "plane": plane_kind}},
        }
    )
    calls: list[tuple[Any, ...]] = []
    real = surface_stage.evaluate_surface

    def spy(model, plane, xs, ys, data, options=None):
        calls.append((model, plane, data, options))
        return real(model, plane, xs, ys, data, options)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # torch's thread count is process-global: restore it for later tests
    mp = pytest.MonkeyPatch()
    mp.setattr(surface_stage, "evaluate_surface", spy)
    try:
        run = Run(cfg, tmp_path_factory.mktemp(f"surface-{plane_kind}-{bn_mode}"))
        run.run()
    finally:
        mp.undo()
        torch.set_num_threads(threads)
    return plane_kind, bn_mode, run, calls


def _copy_a(run: Run, mask: str) -> tuple[float, float]:
    """Copy A's own loss and error, with its own running statistics, on the surface's examples."""
    model = run.fresh_model()
    model.load_state_dict(run.load_state(copies_key(mask, 0, 0), "a"))
    x, y = run.data.x_test[:EXAMPLES], run.data.y_test[:EXAMPLES]
    m = evaluate(model, x, y)
    return m.loss, m.error


@pytest.mark.parametrize("mask", ["dense", "imp-k0-r1"])
def test_surface_at_copy_a_is_copy_a(finished, mask):
    plane_kind, bn_mode, run, calls = finished
    key = surface_key(mask, 0, 0)
    info = run.stage_info(key)
    assert info["bn_mode"] == bn_mode
    loss_a, error_a = _copy_a(run, mask)
    assert error_a < 0.5, "copy A has learnt something, so the template's statistics would show"

    # The stage's own plane and options, evaluated at copy A's coordinates.
    point = "centre" if plane_kind == "random" else "A"
    (ax, ay) = info["points"][point]
    (model, plane, data, options) = next(c for c in calls if (c[3].masks is None) == (mask == "dense"))
    assert plane.points[point] == (ax, ay)
    at_a = surface_stage.evaluate_surface(model, plane, [ax], [ay], data, options)
    assert at_a.loss["test"][0, 0] == pytest.approx(loss_a, rel=1e-5, abs=1e-6)
    assert at_a.error["test"][0, 0] == pytest.approx(error_a, abs=1.0 / EXAMPLES + 1e-12)

    if plane_kind == "random":  # copy A is the grid's centre: the saved surface itself shows copy A
        surface = run.load_surface(key)
        c = len(surface.xs) // 2
        assert surface.xs[c] == 0.0 and surface.ys[c] == 0.0
        assert surface.loss["test"][c, c] == pytest.approx(loss_a, rel=1e-5, abs=1e-6)
        assert surface.error["test"][c, c] == pytest.approx(error_a, abs=1.0 / EXAMPLES + 1e-12)
