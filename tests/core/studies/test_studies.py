import json

import numpy as np
import pytest
import torch

from lmc_core.foundations.config import StudyConfig
from lmc_core.foundations.layout import copies_key, mask_key, path_key
from lmc_core.studies.plan import plan
from lmc_core.studies.run import Run

TINY = {
    "name": "tiny",
    "data": {"name": "teacher"},
    "model": {"arch": "mlp", "hidden": [24]},
    "train": {"lr": 0.1, "batch_size": 50, "epochs": 2},
    "pruning": {"mask_sources": ["dense", "imp", "random"], "rounds": 2, "rewind_steps": [0, 10]},
    "stability": {"pairs": [[1, 2]], "alphas": 5},
    "sweep": {"steps": [0, 20], "masks": ["dense", "imp-k0-r2"]},
}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    run = Run(StudyConfig.model_validate(TINY), tmp_path_factory.mktemp("runs"))
    run.run()
    return run


def test_plan_orders_dependencies_first():
    stages = plan(StudyConfig.model_validate(TINY))
    seen = set()
    for s in stages:
        assert set(s.deps) <= seen, f"{s.key} before its dependencies"
        seen.add(s.key)
    keys = [s.key for s in stages]
    assert len(keys) == len(set(keys))
    assert "parent/k10" in keys and "parent/k20" in keys
    assert keys.count(copies_key("dense", 0, 0)) == 1, "round 0 is shared by every mask source"


def test_sweep_of_an_unknown_mask_names_the_valid_ones():
    bad = dict(TINY, sweep={"steps": [5], "masks": ["imp-k3-r1"]})
    with pytest.raises(ValueError, match="imp-k0-r1"):
        plan(StudyConfig.model_validate(bad))


def test_imp_sparsity_is_exact_each_round(finished):
    for k in (0, 10):
        for r in (1, 2):
            info = finished.stage_info(mask_key(f"imp-k{k}-r{r}"))
            masks = finished.load_masks(f"imp-k{k}-r{r}")
            n = sum(m.numel() for m in masks.values())
            assert abs(info["sparsity"] - (1 - 0.8**r)) <= 1 / n


def test_random_control_matches_imp_layer_counts(finished):
    imp, rnd = finished.load_masks("imp-k0-r2"), finished.load_masks("random-k0-r2")
    assert {k: int(v.sum()) for k, v in imp.items()} == {k: int(v.sum()) for k, v in rnd.items()}
    assert any(not torch.equal(imp[k], rnd[k]) for k in imp)


def test_copies_keep_pruned_weights_zero_and_start_from_the_rewind_point(finished):
    masks = finished.load_masks("imp-k10-r1")
    for name in "ab":
        state = finished.load_state(copies_key("imp-k10-r1", 10, 0), name)
        for k, m in masks.items():
            assert (state[k][~m] == 0).all()


def test_path_endpoints_reproduce_the_copies_own_metrics(finished):
    for mid, k in [("dense", 0), ("imp-k0-r2", 0), ("random-k10-r1", 10)]:
        copies = finished.stage_info(copies_key(mid, k, 0))["copies"]
        path = finished.load_path(path_key(mid, k, 0))
        for split in ("test", "train"):
            assert path.error[split][0] == pytest.approx(copies[0]["metrics"][split]["error"], abs=1e-9)
            assert path.error[split][-1] == pytest.approx(copies[1]["metrics"][split]["error"], abs=1e-9)
            assert path.loss[split][0] == pytest.approx(copies[0]["metrics"][split]["loss"], rel=1e-5)


def test_training_points_accumulate_over_imp_rounds(finished):
    per_run = lambda k: (2 * (2000 // 50) - k) * 50  # noqa: E731
    parent = 10 * 50
    assert finished.stage_info(mask_key("imp-k0-r1"))["examples"] == per_run(0)
    assert finished.stage_info(mask_key("imp-k0-r2"))["examples"] == 2 * per_run(0)
    assert finished.stage_info(mask_key("imp-k10-r2"))["examples"] == parent + 2 * per_run(10)
    assert finished.stage_info(mask_key("random-k0-r1"))["examples"] == 0
    # the parent run to k is counted once, and each copy counts only its own steps after k
    assert finished.stage_info("parent/k10")["examples"] == parent
    assert [c["examples"] for c in finished.stage_info(copies_key("dense", 10, 0))["copies"]] == [per_run(10)] * 2 == [3500] * 2
    rows = {(r["source"], r["rewind_step"], r["round"]): r for r in finished.table() if r["source"] != "sweep"}
    assert rows[("imp", 10, 2)]["training_points"] == parent + 2 * per_run(10) == 7500
    assert rows[("imp", 10, 1)]["training_points"] == parent + per_run(10)
    assert rows[("random", 10, 2)]["training_points"] == 0 and rows[("random", 10, 2)]["points_ratio"] is None


def test_table_has_a_row_per_subnetwork_and_sweep_point(finished):
    rows = finished.table()
    main = [r for r in rows if r["source"] != "sweep"]
    assert len(main) == 2 * (1 + 3 + 3)
    sweep = [(r["mask"], r["rewind_step"]) for r in rows if r["source"] == "sweep"]
    assert sweep == [("dense", 0), ("dense", 20), ("imp-k0-r2", 0), ("imp-k0-r2", 20)]
    imp2 = next(r for r in main if r["mask"] == "imp-k0-r2")
    assert imp2["sparsity"] == pytest.approx(36.0, abs=0.1)
    # the barriers are Frankle's and Entezari's, recomputed by hand from the stored path (test split, 5 alphas)
    path = finished.load_path(path_key("imp-k0-r2", 0, 0))
    err, loss, alphas = np.asarray(path.error["test"]), np.asarray(path.loss["test"]), np.asarray(path.alphas)
    assert alphas.tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert imp2["error_barrier"] == pytest.approx(100 * (err.max() - (err[0] + err[-1]) / 2), abs=1e-9)
    assert imp2["loss_barrier"] == pytest.approx(max(loss - ((1 - alphas) * loss[0] + alphas * loss[-1])), abs=1e-9)
    copies = finished.stage_info(copies_key("imp-k0-r2", 0, 0))["copies"]
    assert imp2["accuracy"] == [100 * c["metrics"]["test"]["accuracy"] for c in copies]


def test_run_records_config_and_versions(finished):
    manifest = json.loads((finished.dir / "manifest.json").read_text())
    assert manifest["run_id"] == finished.id and "torch" in manifest["versions"]
    assert StudyConfig.model_validate_json((finished.dir / "config.json").read_text()).run_id() == finished.id


def test_rerun_skips_finished_stages_and_resumes_an_interrupted_one(finished):
    events = []
    again = Run(finished.cfg, finished.dir.parent)
    again.run(events.append)
    assert [e for e in events if e.stage != "study"] == [], "a finished run trains nothing"

    key = copies_key("imp-k0-r1", 0, 0)
    before, table_before = again.load_state(key, "a"), again.table()
    (again.stage_dir(key) / "stage.json").unlink()  # as if killed in the middle of this stage
    events.clear()
    again.run(events.append)
    trained = {e.stage.split("[")[0] for e in events if e.stage != "study"}
    assert trained == {key}
    after = again.load_state(key, "a")
    assert all(torch.equal(before[k], after[k]) for k in before), "a resumed stage reproduces its result bit for bit"
    assert again.table() == table_before, "the resumed stage reproduces its metrics, hence the table"


def test_copies_record_their_distances_computed_by_hand(finished):
    """The paper's distances beside the barrier: ||A - B|| and each copy's distance from the masked rewind point."""
    key = copies_key("imp-k0-r2", 0, 0)
    info = finished.stage_info(key)
    a, b = finished.load_state(key, "a"), finished.load_state(key, "b")
    masks = finished.load_masks("imp-k0-r2")
    init = finished.load_state("init")
    params = [n for n, _ in finished.template.named_parameters()]
    start = {n: init[n] * masks[n] if n in masks else init[n] for n in params}  # the copies start from the masked theta_0

    def dist(x, y):
        return float(np.sqrt(sum(((x[n].double() - y[n].double()) ** 2).sum().item() for n in params)))

    assert info["distance_between_copies"] == pytest.approx(dist(a, b), rel=1e-12) and info["distance_between_copies"] > 0
    assert [c["distance_to_rewind"] for c in info["copies"]] == pytest.approx([dist(a, start), dist(b, start)], rel=1e-12)
    row = next(r for r in finished.table() if r["mask"] == "imp-k0-r2" and r["source"] == "imp")
    assert row["copy_distances"] == [info["distance_between_copies"]]
