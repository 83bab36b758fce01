"""The surface stage on a BatchNorm network: every point uses the statistics the study's bn_mode names (issue 13).

With bn_mode="endpoint" that is copy A's running statistics, as on the path, so the surface at copy A's
coordinates is copy A itself; with "interpolate" on a plane spanned by the copies (the 'copies' plane, the
paper's four-solution plane), each spanning copy's own statistics at its point. The template's (initial)
statistics must never leak in.

Then the paper's four-solution plane end to end on an MLP (no BatchNorm, so every value is exact): the models
at their coordinates, A' and B' off the plane at their projections computed by hand, and a surface evaluated on
a decoded synthetic set.
"""

import shutil
from typing import Any

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from lmc_core.foundations.config import StudyConfig
from lmc_core.foundations.layout import copies_key, surface_key, synthetic_key
from lmc_core.studies.plan import plan
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

CASES = [
    ("random", "endpoint"),
    ("copies", "endpoint"),
    ("copies", "interpolate"),
    ("four_solution", "endpoint"),
    ("four_solution", "interpolate"),
]


@pytest.fixture(scope="module", params=CASES, ids=[f"{p}-{m}" for p, m in CASES])
def finished(request, tmp_path_factory):
    """A finished tiny BN study, and what the surface stage handed `evaluate_surface` for each surface key."""
    plane_kind, bn_mode = request.param
    pairs = [[1, 2], [3, 4]] if plane_kind == "four_solution" else [[1, 2]]
    cfg = StudyConfig.model_validate(
        {
            **STUDY,
            "stability": {**STUDY["stability"], "bn_mode": bn_mode, "pairs": pairs},
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
    # What the stage records for the marker is the same value.
    assert info["at_points"]["test"][point]["loss"] == pytest.approx(loss_a, rel=1e-5, abs=1e-6)

    if plane_kind == "random":  # copy A is the grid's centre: the saved surface itself shows copy A
        surface = run.load_surface(key)
        c = len(surface.xs) // 2
        assert surface.xs[c] == 0.0 and surface.ys[c] == 0.0
        assert surface.loss["test"][c, c] == pytest.approx(loss_a, rel=1e-5, abs=1e-6)
        assert surface.error["test"][c, c] == pytest.approx(error_a, abs=1.0 / EXAMPLES + 1e-12)


# --------------------------------------------------------------------------- the four-solution plane, end to end

FOUR: dict[str, Any] = {
    "name": "four-solution-tiny",
    "data": {"name": "teacher"},
    "model": {"arch": "mlp", "hidden": [8]},
    "train": {"lr": 0.1, "batch_size": 50, "epochs": 2},
    "pruning": {"mask_sources": ["dense", "imp"], "rounds": 1, "rewind_steps": [0]},
    "stability": {"pairs": [[1, 2], [3, 4]], "alphas": 3, "splits": ["test"]},
    "synthetic": {"sets": {"dm": {"method": "dm", "ipc": 2, "iterations": 2, "batch_real": 16}}, "evaluate_runs": 0},
    "analysis": {"surface": {"plane": "four_solution", "resolution": 3, "examples": 200, "split": ["test", "synthetic.dm"]}},
}
MASK = "imp-k0-r1"


@pytest.fixture(scope="module")
def four(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run = Run(StudyConfig.model_validate(FOUR), tmp_path_factory.mktemp("four-solution"))
        run.run()
    finally:
        torch.set_num_threads(threads)
    return run


def _flat(state: dict[str, torch.Tensor], names: list[str]) -> np.ndarray:
    return np.concatenate([state[n].double().numpy().ravel() for n in names])


def _loss_at(run: Run, vec: np.ndarray, names: list[str], x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Loss and error of the template with its parameters set from the flat vector `vec`."""
    model = run.fresh_model()
    params = dict(model.named_parameters())
    pos = 0
    with torch.no_grad():
        for n in names:
            t = params[n]
            t.copy_(torch.from_numpy(vec[pos : pos + t.numel()]).view_as(t).to(t.dtype))
            pos += t.numel()
    m = evaluate(model, x, y)
    return m.loss, m.error


def test_four_solution_stage_plans_both_pairs_and_the_synthetic_set():
    stages = {s.key: s for s in plan(StudyConfig.model_validate(FOUR))}
    deps = stages[surface_key(MASK, 0, 0)].deps
    assert {copies_key(MASK, 0, 0), copies_key(MASK, 0, 1), synthetic_key("dm")} <= set(deps)


def test_four_solution_surface_passes_through_a_and_b_and_projects_a2_b2_by_hand(four):
    """A and B at (+-1, 0) are the copies themselves; A' and B' sit at their least-squares projections, computed here
    with numpy from the four stored copies, and the plane's value there is the loss of the projected weights."""
    info = four.stage_info(surface_key(MASK, 0, 0))
    names = [n for n, _ in four.template.named_parameters()]
    a, b = (_flat(four.load_state(copies_key(MASK, 0, 0), c), names) for c in ("a", "b"))
    a2, b2 = (_flat(four.load_state(copies_key(MASK, 0, 1), c), names) for c in ("a", "b"))
    centre, d1, d2 = (a + b) / 2, (a - b) / 2, (b2 - a2) / 2
    x, y = four.data.x_test[:200], four.data.y_test[:200]
    assert info["points"]["A"] == [1.0, 0.0] and info["points"]["B"] == [-1.0, 0.0]
    assert info["residual"]["A"] == 0.0 and info["residual"]["B"] == 0.0
    assert info["models"]["B'"] == {"pair": 1, "copy": "b", "seed": 4}
    for name, vec in (("A", a), ("B", b)):
        own = _loss_at(four, vec, names, x, y)
        assert info["at_points"]["test"][name]["loss"] == pytest.approx(own[0], rel=1e-5)
        assert info["at_points"]["test"][name]["error"] == pytest.approx(own[1], abs=1e-9)
    basis = np.stack([d1, d2], axis=1)
    for name, vec in (("A'", a2), ("B'", b2)):
        coef = np.linalg.lstsq(basis, vec - centre, rcond=None)[0]
        projected = centre + basis @ coef
        residual = np.linalg.norm(vec - projected) / np.linalg.norm(vec - centre)
        assert info["points"][name] == pytest.approx(list(coef), abs=1e-6)
        assert info["residual"][name] == pytest.approx(residual, rel=1e-6)
        assert residual > 1e-3, "two independent pairs do not share a plane: the stage must not pretend they do"
        on_plane = _loss_at(four, projected, names, x, y)
        assert info["at_points"]["test"][name]["loss"] == pytest.approx(on_plane[0], rel=1e-5)
        assert info["at_points"]["test"][name]["loss"] != pytest.approx(_loss_at(four, vec, names, x, y)[0], rel=1e-4)
    # The saved grid is centred on the midpoint of A and B, and spans every model with a margin.
    surface = four.load_surface(surface_key(MASK, 0, 0))
    c = len(surface.xs) // 2
    assert surface.loss["test"][c, c] == pytest.approx(_loss_at(four, centre, names, x, y)[0], rel=1e-5)
    reach = max(max(abs(v) for v in p) for p in info["points"].values())
    assert surface.xs[-1] == pytest.approx(1.25 * reach)


def test_surface_on_the_synthetic_split_is_the_loss_on_the_decoded_set(four):
    """At copy A's coordinate the surface on synthetic.dm is copy A's loss on the decoded synthetic set, computed by hand."""
    info = four.stage_info(surface_key(MASK, 0, 0))
    assert info["splits"] == ["test", "synthetic.dm"] and info["split"] == "test"
    xs, ys = four.synthetic_set("dm").decode()
    assert info["examples_per_split"]["synthetic.dm"] == len(xs)
    model = four.fresh_model()
    model.load_state_dict(four.load_state(copies_key(MASK, 0, 0), "a"))
    own = evaluate(model, xs.to(four.device), ys.to(four.device))
    assert info["at_points"]["synthetic.dm"]["A"]["loss"] == pytest.approx(own.loss, rel=1e-5)
    assert info["at_points"]["synthetic.dm"]["A"]["error"] == pytest.approx(own.error, abs=1e-9)
    # the stored grid has the synthetic split too, and it is not the test split's
    surface = four.load_surface(surface_key(MASK, 0, 0))
    assert set(surface.loss) == {"test", "synthetic.dm"}
    assert not np.allclose(surface.loss["test"], surface.loss["synthetic.dm"])
    assert info["loss_range"]["synthetic.dm"] == [
        float(np.nanmin(surface.loss["synthetic.dm"])),
        float(np.nanmax(surface.loss["synthetic.dm"])),
    ]


def test_four_solution_centred_on_a_puts_a_at_the_origin(four, tmp_path):
    """centre='A' (the authors' current multiple_lmc.py): A at (0, 0), B at (-2, 0); the grid's centre is copy A itself."""
    cfg = StudyConfig.model_validate({**FOUR, "analysis": {"surface": {**FOUR["analysis"]["surface"], "centre": "A"}}})
    run = Run(cfg, tmp_path)
    for stage in run.stages:  # every stage but the surfaces is the finished study's: reuse them
        if stage.kind != "surface":
            shutil.copytree(four.stage_dir(stage.key), run.stage_dir(stage.key))
    key = surface_key(MASK, 0, 0)
    info = run.execute(next(s for s in run.stages if s.key == key))
    assert info["points"]["A"] == [0.0, 0.0] and info["points"]["B"] == [-2.0, 0.0] and info["centre"] == "A"
    model = run.fresh_model()
    model.load_state_dict(run.load_state(copies_key(MASK, 0, 0), "a"))
    surface = run.load_surface(key)
    c = len(surface.xs) // 2
    assert surface.loss["test"][c, c] == pytest.approx(evaluate(model, run.data.x_test[:200], run.data.y_test[:200]).loss, rel=1e-6)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"stability": {"pairs": [[1, 2]], "alphas": 3, "splits": ["test"]}}, "needs two seed pairs"),
        ({"analysis": {"surface": {"split": ["test", "synthetic.nope"]}}}, r"\['synthetic.nope'\] name no synthetic set"),
        ({"analysis": {"surface": {"split": "val"}}}, "unknown split"),
        ({"analysis": {"surface": {"split": []}}}, "at least one split"),
        ({"analysis": {"surface": {"plane": "copies", "centre": "A"}}}, "applies to plane 'four_solution' only"),
    ],
)
def test_bad_surface_configs_say_what_to_change(change, message):
    with pytest.raises(ValidationError, match=message):
        StudyConfig.model_validate({**FOUR, **change})


def test_a_single_split_name_is_a_list_of_one():
    cfg = StudyConfig.model_validate({**FOUR, "analysis": {"surface": {"plane": "four_solution", "split": "train"}}})
    assert cfg.analysis.surface is not None and cfg.analysis.surface.split == ["train"]


def test_a_copies_plane_passes_through_the_copies_own_start_under_a_weights_only_rewind(tmp_path):
    """Under pruning.rewind="weights" the pair starts from theta_0's weights with the pruned network's biases: the plane's
    'rewind' point must be that start, not theta_0 (which the copies never were)."""
    cfg = StudyConfig.model_validate(
        {
            **FOUR,
            "pruning": {**FOUR["pruning"], "rewind": "weights"},
            "stability": {**FOUR["stability"], "pairs": [[1, 2]]},
            "analysis": {"surface": {"plane": "copies", "resolution": 3, "examples": 200}},
        }
    )
    run = Run(cfg, tmp_path)
    run.run()
    info = run.stage_info(surface_key(MASK, 0, 0))
    start = run.start_state(MASK, 0)
    theta0 = run.load_state("init")
    assert any(not torch.equal(start[n].cpu(), theta0[n]) for n in start if n.endswith("bias")), "biases kept from the pruned copy"
    model = run.fresh_model()
    model.load_state_dict(start)
    x, y = run.data.x_test[:200], run.data.y_test[:200]
    assert info["points"]["rewind"] == [0.0, 0.0]
    assert info["at_points"]["test"]["rewind"]["loss"] == pytest.approx(evaluate(model, x, y).loss, rel=1e-5, abs=1e-6)
