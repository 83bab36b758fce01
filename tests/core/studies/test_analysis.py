"""Surfaces and Hessians as study stages: they must measure the study's own models, exactly."""

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from lmc_core.foundations.config import StudyConfig
from lmc_core.foundations.layout import copies_key, hessian_key, surface_key
from lmc_core.hessian.operator import HessianOperator
from lmc_core.studies.plan import plan
from lmc_core.studies.run import Run
from lmc_core.train.evaluation import evaluate

STUDY = {
    "name": "analysis-tiny",
    "data": {"name": "teacher"},
    "model": {"arch": "mlp", "hidden": [8]},
    "train": {"lr": 0.1, "batch_size": 50, "epochs": 2},
    "pruning": {"mask_sources": ["dense", "imp"], "rounds": 1, "rewind_steps": [0]},
    "stability": {"pairs": [[1, 2]], "alphas": 3, "splits": ["test"]},
    "analysis": {
        "surface": {"resolution": 5, "examples": 200},
        "hessian": {"examples": 200, "top_k": 3, "density_runs": 2, "density_steps": 20, "diagonal": "exact", "trace_max_hvps": 120},
    },
}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    # One intra-op thread for this tiny study, then the process's own count back: torch's thread count is
    # process-global, and later tests (the vmap comparisons in tests/test_stacked.py) depend on it.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run = Run(StudyConfig.model_validate(STUDY), tmp_path_factory.mktemp("analysis"))
        run.run()
    finally:
        torch.set_num_threads(threads)
    return run


def test_plan_has_a_surface_and_a_hessian_per_tested_subnetwork():
    keys = {s.key for s in plan(StudyConfig.model_validate(STUDY))}
    for mid in ("dense", "imp-k0-r1"):
        assert surface_key(mid, 0, 0) in keys and hessian_key(mid, 0, 0) in keys
    only = StudyConfig.model_validate({**STUDY, "analysis": {**STUDY["analysis"], "mask_sources": ["imp"], "rounds": [1]}})
    keys = {s.key for s in plan(only)}
    assert surface_key("imp-k0-r1", 0, 0) in keys and surface_key("dense", 0, 0) not in keys


@pytest.mark.parametrize(
    "analysis, field",
    [
        ({"mask_sources": ["random"]}, "analysis.mask_sources"),
        ({"pairs": [3]}, "analysis.pairs"),
        ({"surface": {"resolution": 4}}, "resolution"),
    ],
)
def test_bad_analysis_configs_name_the_field(analysis, field):
    with pytest.raises(ValidationError, match=field.split(".")[-1]):
        StudyConfig.model_validate({**STUDY, "analysis": analysis})


def test_surface_centre_is_the_masked_rewind_point_and_the_copies_are_marked(finished):
    key = surface_key("imp-k0-r1", 0, 0)
    surface, info = finished.load_surface(key), finished.stage_info(key)
    masks = finished.load_masks("imp-k0-r1")
    model = finished.fresh_model()
    model.load_state_dict(finished.load_state("init"))
    with torch.no_grad():
        for name, m in masks.items():
            dict(model.named_parameters())[name].mul_(m)
    x, y = finished.data.x_test[:200], finished.data.y_test[:200]
    centre = len(surface.xs) // 2
    assert surface.xs[centre] == 0.0 and surface.ys[centre] == 0.0
    assert surface.loss["test"][centre, centre] == pytest.approx(evaluate(model, x, y).loss, rel=1e-6)
    assert set(info["points"]) == {"rewind", "A", "B"} and info["points"]["rewind"] == [0.0, 0.0]
    reach = max(max(abs(c) for c in xy) for xy in info["points"].values())
    assert max(surface.xs) >= reach, "the grid covers both copies"
    assert np.isfinite(surface.loss["test"]).all()


def test_hessian_matches_the_dense_hessian_of_copy_a(finished):
    key = hessian_key("imp-k0-r1", 0, 0)
    info = finished.stage_info(key)
    masks = finished.load_masks("imp-k0-r1")
    model = finished.fresh_model()
    model.load_state_dict(finished.load_state(copies_key("imp-k0-r1", 0, 0), "a"))
    batch = (finished.data.x_train[:200], finished.data.y_train[:200])
    dense = HessianOperator(model, [batch], masks=masks, dtype=torch.float64).to_dense()
    active = torch.cat([masks[n].flatten() if n in masks else torch.ones(p.numel(), dtype=torch.bool) for n, p in model.named_parameters()])
    sub = dense[active][:, active]
    eig = torch.linalg.eigvalsh(sub).flip(0)
    assert info["active"] == int(active.sum()) < info["parameters"]
    assert info["top_eigenvalues"] == pytest.approx(eig[:3].tolist(), rel=1e-3)
    exact_trace = float(torch.trace(sub))
    assert abs(info["trace"] - exact_trace) <= max(4 * info["trace_stderr"], 1e-6 * abs(exact_trace))
    arrays = np.load(finished.stage_dir(key) / "hessian.npz")
    assert np.allclose(arrays["diagonal"][active.numpy()], torch.diagonal(sub).numpy(), rtol=1e-3, atol=1e-6)
    assert (arrays["diagonal"][~active.numpy()] == 0).all(), "pruned coordinates carry no curvature"
    grid, density = arrays["density_grid"], arrays["density"]
    assert np.trapezoid(density, grid) == pytest.approx(1.0, abs=1e-3)


def test_analysis_table_reports_every_analysed_subnetwork(finished):
    rows = {r["mask"]: r for r in finished.analysis_table()}
    assert set(rows) == {"dense", "imp-k0-r1"}
    imp = rows["imp-k0-r1"]
    assert imp["lambda_max"] == finished.stage_info(hessian_key("imp-k0-r1", 0, 0))["top_eigenvalues"][0]
    assert imp["surface_loss_min"] <= imp["surface_loss_max"]
