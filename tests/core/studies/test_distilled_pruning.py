"""Distilled pruning (IMP whose training runs on a synthetic set) and its bookkeeping.

The properties below would be false if the science or the accounting were wrong: exact sparsities,
exact training-point counters (the unit of the paper's "fewer training points" claim), the control
set really being real data with the synthetic set's class counts, masks staying zero, resuming
without recomputation, untested IMP rounds training copy A alone, imports, CutMix and DSA.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from lmc_core.data.augment import Augmenter
from lmc_core.data.dataset import load_dataset
from lmc_core.foundations.config import DataConfig, DistillConfig, ModelConfig, MTTSettings, StudyConfig, SyntheticConfig, TrainConfig
from lmc_core.foundations.layout import copies_key, mask_key, path_key, synthetic_key
from lmc_core.models import build_model
from lmc_core.prune.magnitude import dense_masks, eligible_names, magnitude_prune
from lmc_core.studies.plan import plan
from lmc_core.studies.run import Run
from lmc_core.studies.validation import validate_config
from lmc_core.train.loop import BatchStream, train

# ---------------------------------------------------------------------------------------------
# The tiny study: teacher data (2000 train rows, 4 classes, 20 features), MLP 20-16-4.

N_TRAIN = 2000
REAL_BATCH, REAL_EPOCHS = 50, 2
IPC, NUM_CLASSES = 3, 4
SYN_BATCH, SYN_EPOCHS = 4, 3
DM_ITERATIONS, DM_BATCH_REAL = 3, 32
PAIR = (1, 2)

SOURCES = ["dense", "imp", "distilled.dm", "subset.dm", "combined.dm.r1", "random"]

STUDY: dict[str, Any] = {
    "name": "distilled-tiny",
    "data": {"name": "teacher"},
    "model": {"arch": "mlp", "hidden": [16]},
    "train": {"lr": 0.1, "batch_size": REAL_BATCH, "epochs": REAL_EPOCHS},
    "pruning": {"mask_sources": SOURCES, "rounds": 2, "rewind_steps": [0]},
    "stability": {"pairs": [list(PAIR)], "alphas": 3, "splits": ["test"]},
    "synthetic": {
        "sets": {"dm": {"method": "dm", "ipc": IPC, "iterations": DM_ITERATIONS, "batch_real": DM_BATCH_REAL}},
        "train": {"lr": 0.05, "batch_size": SYN_BATCH, "epochs": SYN_EPOCHS, "schedule": "constant"},
        "evaluate_runs": 1,
    },
}

DECODED = IPC * NUM_CLASSES  # factor 1 on vectors: one decoded example per stored one
SYN_RUN_EXAMPLES = SYN_EPOCHS * (DECODED // SYN_BATCH) * SYN_BATCH
REAL_RUN_EXAMPLES = REAL_EPOCHS * (N_TRAIN // REAL_BATCH) * REAL_BATCH


def study(**overrides) -> dict:
    out = copy.deepcopy(STUDY)
    for section, values in overrides.items():
        out[section] = {**out.get(section, {}), **values} if isinstance(values, dict) else values
    return out


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These models are tiny: on a shared 2-core machine a second intra-op thread only adds contention."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    run = Run(StudyConfig.model_validate(STUDY), tmp_path_factory.mktemp("distilled"))
    run.run()
    return run


def _n_weights(masks) -> int:
    return sum(m.numel() for m in masks.values())


# ---------------------------------------------------------------------------------------------
# Config validation


def _refused(cfg: dict, *needles: str) -> str:
    with pytest.raises(ValidationError) as info:
        validate_config(cfg)
    text = str(info.value)
    for needle in needles:
        assert needle in text, f"{needle!r} not in: {text}"
    return text


def test_distilled_source_without_its_set_names_synthetic_sets():
    cfg = study(pruning={"mask_sources": ["dense", "distilled.nope"]})
    _refused(cfg, "nope", "synthetic.sets")


def test_combined_without_its_distilled_source_says_so():
    cfg = study(pruning={"mask_sources": ["dense", "imp", "combined.dm.r1"], "rounds": 3})
    _refused(cfg, "combined.dm.r1", "distilled.dm")


def test_combined_with_bad_round_syntax_is_refused():
    cfg = study(pruning={"mask_sources": ["dense", "distilled.dm", "combined.dm.x"], "rounds": 3})
    _refused(cfg, "r<R>")


def test_combined_start_round_beyond_the_rounds_is_refused():
    cfg = study(pruning={"mask_sources": ["dense", "distilled.dm", "combined.dm.r9"], "rounds": 2})
    _refused(cfg, "combined.dm.r9", "start round 9")
    # the last round cannot be a start round either: nothing would be left to prune
    cfg = study(pruning={"mask_sources": ["dense", "distilled.dm", "combined.dm.r2"], "rounds": 2})
    _refused(cfg, "start round 2")
    # r1 with 2 rounds is the valid edge
    ok = study(pruning={"mask_sources": ["dense", "distilled.dm", "combined.dm.r1"], "rounds": 2})
    validate_config(ok)


@pytest.mark.parametrize("name", ["magic", "distilled", "distilled.dm.extra", "subset", "combined.dm"])
def test_unknown_or_malformed_source_lists_the_registered_syntaxes(name):
    cfg = study(pruning={"mask_sources": ["dense", name]})
    _refused(cfg, "distilled.<set>", "subset.<set>", "combined.<set>.r<R>", "imp", "random")


@pytest.mark.parametrize("bad", ["d.m", "d-m"])
def test_set_names_with_dots_or_dashes_are_refused(bad):
    with pytest.raises(ValidationError, match="synthetic set names"):
        SyntheticConfig.model_validate({"sets": {bad: {"method": "dm"}}})
    cfg = study(synthetic={"sets": {bad: {"method": "dm"}}}, pruning={"mask_sources": ["dense"]})
    _refused(cfg, bad)


def test_import_without_a_path_is_refused():
    with pytest.raises(ValidationError, match="needs `path`"):
        DistillConfig.model_validate({"method": "import"})
    DistillConfig.model_validate({"method": "import", "path": "set.npz"})


def test_mtt_settings_whose_target_lies_beyond_the_trajectory_are_refused():
    with pytest.raises(ValidationError, match="exceeds expert_train_epochs"):
        MTTSettings(max_start_epoch=9, expert_epochs=2, expert_train_epochs=10)
    MTTSettings(max_start_epoch=8, expert_epochs=2, expert_train_epochs=10)  # exactly fits
    cfg = study(
        synthetic={"sets": {"m": {"method": "mtt", "mtt": {"max_start_epoch": 5, "expert_epochs": 3, "expert_train_epochs": 6}}}},
        pruning={"mask_sources": ["dense"]},
    )
    _refused(cfg, "expert_train_epochs")


# ---------------------------------------------------------------------------------------------
# The finished tiny study


@pytest.mark.parametrize("source", ["distilled.dm", "subset.dm", "imp"])
@pytest.mark.parametrize("r", [1, 2])
def test_sparsity_is_exact_for_every_round(finished, source, r):
    mid = f"{source}-k0-r{r}"
    masks = finished.load_masks(mid)
    kept = sum(int(m.sum()) for m in masks.values())
    n = _n_weights(masks)
    assert abs((1 - kept / n) - (1 - 0.8**r)) <= 1 / n
    assert abs(finished.stage_info(mask_key(mid))["sparsity"] - (1 - 0.8**r)) <= 1 / n


def test_combined_sparsity_is_exact_and_it_starts_from_the_distilled_mask(finished):
    masks = finished.load_masks("combined.dm.r1-k0-r2")
    start = finished.load_masks("distilled.dm-k0-r1")
    n = _n_weights(masks)
    assert abs(finished.stage_info(mask_key("combined.dm.r1-k0-r2"))["sparsity"] - 0.36) <= 1 / n
    for name, m in masks.items():
        assert not (m & ~start[name]).any(), "a pruned weight came back: masks only shrink"


def test_distilled_training_points_are_exact(finished):
    for r in (1, 2):
        info = finished.stage_info(mask_key(f"distilled.dm-k0-r{r}"))
        assert info["examples"] == r * SYN_RUN_EXAMPLES


def test_subset_control_spends_the_same_points_as_distilled(finished):
    for r in (1, 2):
        sub = finished.stage_info(mask_key(f"subset.dm-k0-r{r}"))["examples"]
        dist = finished.stage_info(mask_key(f"distilled.dm-k0-r{r}"))["examples"]
        assert sub == dist == r * SYN_RUN_EXAMPLES


def test_imp_training_points_are_exact(finished):
    for r in (1, 2):
        assert finished.stage_info(mask_key(f"imp-k0-r{r}"))["examples"] == r * REAL_RUN_EXAMPLES


def test_combined_points_are_distilled_round_then_one_real_training(finished):
    dist1 = finished.stage_info(mask_key("distilled.dm-k0-r1"))["examples"]
    comb = finished.stage_info(mask_key("combined.dm.r1-k0-r2"))["examples"]
    assert comb == dist1 + REAL_RUN_EXAMPLES == SYN_RUN_EXAMPLES + REAL_RUN_EXAMPLES


def test_random_masks_cost_nothing(finished):
    for r in (1, 2):
        assert finished.stage_info(mask_key(f"random-k0-r{r}"))["examples"] == 0


def test_table_points_ratio_is_imp_over_distilled(finished):
    rows = {(row["source"], row["round"]): row for row in finished.table()}
    for r in (1, 2):
        row = rows[("distilled.dm", r)]
        imp = finished.stage_info(mask_key(f"imp-k0-r{r}"))["examples"]
        assert row["training_points"] == r * SYN_RUN_EXAMPLES
        assert row["points_ratio"] == pytest.approx(imp / (r * SYN_RUN_EXAMPLES))
        assert row["points_ratio"] == pytest.approx(REAL_RUN_EXAMPLES / SYN_RUN_EXAMPLES)
        assert rows[("imp", r)]["points_ratio"] == pytest.approx(1.0)
    assert rows[("dense", 0)]["training_points"] == 0


def test_distill_examples_are_the_synthetic_stage_real_examples(finished):
    real = finished.stage_info(synthetic_key("dm"))["real_examples"]
    # DM draws batch_real real examples of every class at every iteration (teacher classes hold hundreds)
    assert real == DM_ITERATIONS * NUM_CLASSES * DM_BATCH_REAL > 0
    rows = {(row["source"], row["round"]): row for row in finished.table()}
    for r in (1, 2):
        assert finished.stage_info(mask_key(f"distilled.dm-k0-r{r}"))["distill_examples"] == real
        assert rows[("distilled.dm", r)]["distill_points"] == real
        assert finished.stage_info(mask_key(f"imp-k0-r{r}"))["distill_examples"] == 0
        assert rows[("imp", r)]["distill_points"] == 0
    # combined starts from the distilled mask, so it carries the distillation's cost
    assert finished.stage_info(mask_key("combined.dm.r1-k0-r2"))["distill_examples"] == real


def test_subset_is_real_rows_with_the_synthetic_class_counts(finished):
    syn = finished.synthetic_set("dm")
    sub = finished.subset_dataset("dm")
    again = finished.subset_dataset("dm")
    real_x, real_y = finished.data.x_train.cpu(), finished.data.y_train.cpu()
    x, y = sub.x_train.cpu(), sub.y_train.cpu()
    assert len(x) == syn.decoded_count == DECODED
    assert (
        torch.bincount(y, minlength=NUM_CLASSES).tolist()
        == torch.bincount(syn.labels, minlength=NUM_CLASSES).tolist()
        == [IPC] * NUM_CLASSES
    )
    same = (x[:, None, :] == real_x[None, :, :]).all(-1)  # (subset rows, real rows)
    assert same.any(1).all(), "every subset row is a real training row"
    for i in range(len(x)):
        assert (real_y[same[i]] == y[i]).all(), "with its real label"
    assert len({tuple(row.tolist()) for row in x}) == len(x), "drawn without replacement"
    assert torch.equal(x, again.x_train.cpu()) and torch.equal(y, again.y_train.cpu())
    # and it is not the synthetic set itself
    assert not torch.equal(x, syn.images)


@pytest.mark.parametrize("mid", ["distilled.dm-k0-r1", "distilled.dm-k0-r2", "subset.dm-k0-r2", "combined.dm.r1-k0-r2"])
def test_masked_weights_of_the_copies_stay_zero(finished, mid):
    masks = finished.load_masks(mid)
    for name in "ab":
        state = finished.load_state(copies_key(mid, 0, 0), name)
        for k, m in masks.items():
            assert (state[k][~m] == 0).all()
            assert (state[k][m] != 0).any(), "the kept weights trained"


def test_distilled_and_real_masks_differ_but_share_the_init(finished):
    imp, dist = finished.load_masks("imp-k0-r1"), finished.load_masks("distilled.dm-k0-r1")
    assert any(not torch.equal(imp[k], dist[k]) for k in imp), "trained on different data, pruned differently"
    by_key = {s.key: s for s in finished.stages}
    assert "init" in by_key[mask_key("distilled.dm-k0-r1")].deps
    assert by_key[copies_key("dense", 0, 0)].deps == ("init",)
    assert copies_key("dense", 0, 0) in by_key[mask_key("imp-k0-r1")].deps

    # Rebuild distilled round 1 independently: train the init stage's weights on the synthetic set.
    init = finished.load_state("init")
    fresh = build_model(finished.cfg.model, finished.data.input_shape, NUM_CLASSES, finished.cfg.seed)
    assert all(torch.equal(init[k], v) for k, v in fresh.state_dict().items()), "init is theta_0 of the study's seed"
    model = copy.deepcopy(fresh)
    model.load_state_dict(init)
    res = train(
        model,
        finished.synthetic_dataset("dm"),
        finished.cfg.synthetic.train,
        Augmenter(DataConfig(), "vector"),
        data_seed=PAIR[0],
        augment_seed=PAIR[0],
    )
    assert res.examples == SYN_RUN_EXAMPLES
    start = dense_masks(model)
    rebuilt = magnitude_prune(res.state, start, 0.2, scope="global", eligible=eligible_names(list(start)))
    assert all(torch.equal(rebuilt[k], dist[k]) for k in dist)


def test_imp_round_2_is_global_magnitude_pruning_of_round_1s_copy_a_rebuilt_by_hand(finished):
    prev = finished.load_masks("imp-k0-r1")
    state = finished.load_state(copies_key("imp-k0-r1", 0, 0), "a")  # round 1's copy A, trained under round 1's mask
    stored = finished.load_masks("imp-k0-r2")
    names = ["layers.1.weight", "layers.3.weight"]  # MLP 20-16-4: both weight matrices are prunable, biases are not
    assert sorted(stored) == sorted(prev) == names
    n = 20 * 16 + 16 * 4
    assert sum(int(prev[k].sum()) for k in names) == round(n * 0.8) == 307
    # one global ranking of |w| over the weights round 1 kept; keep round(n * 0.8^2) of them
    keep = round(n * 0.64)
    survivors = torch.cat([state[k][prev[k]].abs().flatten() for k in names])
    threshold = survivors.sort(descending=True).values[keep - 1]
    assert (survivors == threshold).sum() == 1, "no tie at the threshold: the hand rule below is exact"
    rebuilt = {k: prev[k] & (state[k].abs() >= threshold) for k in names}
    assert sum(int(m.sum()) for m in rebuilt.values()) == keep == 246
    for k in names:
        assert torch.equal(stored[k], rebuilt[k]), k
    # the rule is sensitive to which weights it ranks: copy B, or round 0's copy A, give other masks
    for other in (finished.load_state(copies_key("imp-k0-r1", 0, 0), "b"), finished.load_state(copies_key("dense", 0, 0), "a")):
        alt = torch.cat([other[k][prev[k]].abs().flatten() for k in names]).sort(descending=True).values[keep - 1]
        assert any(not torch.equal(stored[k], prev[k] & (other[k].abs() >= alt)) for k in names)


def test_training_points_in_stage_files_and_table_match_hand_arithmetic(finished):
    steps_per_epoch = N_TRAIN // REAL_BATCH  # 40 full batches of 50, no remainder
    copy_a = REAL_EPOCHS * steps_per_epoch * REAL_BATCH  # sample-gradient evaluations = steps x batch = 80 x 50
    assert copy_a == 4000
    syn_run = SYN_EPOCHS * (DECODED // SYN_BATCH) * SYN_BATCH  # 3 epochs x 3 batches x 4
    assert syn_run == 36
    assert finished.parent_examples(0) == 0, "rewinding to k = 0 trains no parent"
    for mid in ("dense", "imp-k0-r1", "imp-k0-r2"):
        assert [c["examples"] for c in finished.stage_info(copies_key(mid, 0, 0))["copies"]] == [copy_a, copy_a]
    expected = {
        ("dense", 0): 0,
        ("imp", 1): copy_a,  # parent (0) + round 0's copy A
        ("imp", 2): 2 * copy_a,  # + round 1's copy A
        ("distilled.dm", 1): syn_run,
        ("distilled.dm", 2): 2 * syn_run,
        ("subset.dm", 2): 2 * syn_run,
        ("combined.dm.r1", 2): syn_run + copy_a,  # distilled round 1, then one real training of its copy A
        ("random", 2): 0,
    }
    rows = {(r["source"], r["round"]): r for r in finished.table()}
    for (source, rnd), points in expected.items():
        row = rows[(source, rnd)]
        assert row["training_points"] == points, (source, rnd)
        if rnd:
            assert finished.stage_info(mask_key(row["mask"]))["examples"] == points
    # the ratio the paper reports: real IMP's points over the source's, at the same round
    assert rows[("distilled.dm", 2)]["points_ratio"] == 2 * copy_a / (2 * syn_run) == pytest.approx(4000 / 36)
    assert rows[("combined.dm.r1", 2)]["points_ratio"] == 2 * copy_a / (syn_run + copy_a)
    assert rows[("imp", 2)]["points_ratio"] == 1.0
    assert rows[("random", 2)]["points_ratio"] is None and rows[("dense", 0)]["points_ratio"] is None  # nothing spent


def test_synthetic_table_reports_the_evaluation(finished):
    rows = finished.synthetic_table()
    assert [r["set"] for r in rows] == ["dm"]
    row = rows[0]
    assert row["method"] == "dm" and row["stored"] == DECODED and row["decoded"] == DECODED
    assert set(row["evaluation"]) == {"synthetic", "random_subset", "noise"}
    n_test = len(finished.data.y_test)
    for value in row["evaluation"].values():
        (acc,) = value["accuracies"]  # evaluate_runs = 1
        # a test accuracy in percent is a whole number of correct test rows out of n_test
        assert acc * n_test / 100 == pytest.approx(round(acc * n_test / 100), abs=1e-6)
        assert value["mean"] == acc and value["std"] == 0.0


def test_every_rows_barriers_are_recomputed_from_its_stored_path(finished):
    rows = finished.table()
    assert {(r["source"], r["round"]) for r in rows} == {
        ("dense", 0),
        *((s, r) for s in ("imp", "distilled.dm", "subset.dm", "random") for r in (0, 1, 2)),
        ("combined.dm.r1", 2),
    }
    for r in rows:
        # Frankle's error barrier and Entezari's loss barrier, by hand from the path the row's pair stored
        path = finished.load_path(path_key(r["mask"], r["rewind_step"], 0))
        err, loss, alphas = np.asarray(path.error["test"]), np.asarray(path.loss["test"]), np.asarray(path.alphas)
        assert alphas.tolist() == [0.0, 0.5, 1.0]
        assert r["error_barrier"] == pytest.approx(100 * (err.max() - (err[0] + err[-1]) / 2), abs=1e-9)
        assert r["loss_barrier"] == pytest.approx(max(loss - ((1 - alphas) * loss[0] + alphas * loss[-1])), abs=1e-9)
        assert r["error_barriers"] == [r["error_barrier"]] and r["error_barrier_std"] == 0.0  # one pair
        assert r["sparsity"] == pytest.approx(100 * (1 - 0.8 ** r["round"]), abs=0.5)


def test_resuming_a_finished_study_executes_nothing(finished):
    stamps = {p: p.stat().st_mtime_ns for p in finished.dir.glob("stages/**/stage.json")}
    assert len(stamps) == len(finished.stages)
    events = []
    again = Run(StudyConfig.model_validate(STUDY), finished.dir.parent)
    assert again.dir == finished.dir
    again.run(events.append)
    assert [e for e in events if e.stage != "study"] == []
    assert events[0].message.startswith("0 of")
    assert {p: p.stat().st_mtime_ns for p in finished.dir.glob("stages/**/stage.json")} == stamps


# ---------------------------------------------------------------------------------------------
# pruning.rewind: "full" (the whole state back to theta_k) against "weights" (the authors' code: only conv and linear
# weights go back; biases, norms and buffers keep the values of the network that was pruned)

WEIGHTS = ["layers.1.weight", "layers.3.weight"]  # MLP 20-16-4: the prunable weights; the biases are the rest of the state
BIASES = ["layers.1.bias", "layers.3.bias"]


@pytest.fixture(scope="module")
def finished_weights(tmp_path_factory):
    run = Run(StudyConfig.model_validate(study(pruning={"rewind": "weights"})), tmp_path_factory.mktemp("weights"))
    run.run()
    return run


def _start(theta_k: dict, masks: dict, kept: dict | None = None) -> dict:
    """The subnetwork's starting state by hand: theta_k's weights under the mask, the rest from `kept` or else theta_k."""
    out = {n: (v * masks[n] if n in masks else v) for n, v in theta_k.items()}
    if kept is not None:
        out.update({n: kept[n] for n in BIASES})
    return out


def _train_by_hand(run: Run, start: dict, masks: dict | None, on_synthetic: bool, data=None) -> dict:
    model = build_model(run.cfg.model, run.data.input_shape, NUM_CLASSES, run.cfg.seed)
    model.load_state_dict(start)
    if on_synthetic:
        res = train(model, data, run.cfg.synthetic.train, run.synthetic_augmenter, data_seed=PAIR[0], augment_seed=PAIR[0], masks=masks)
    else:
        res = train(model, run.data, run.cfg.train, run.augmenter, data_seed=PAIR[0], augment_seed=PAIR[0], masks=masks)
    return res.state


def _prune_by_hand(state: dict, prev: dict, keep: int) -> dict:
    """Global magnitude pruning by a threshold: keep the `keep` largest |w| among the weights `prev` kept."""
    survivors = torch.cat([state[k][prev[k]].abs().flatten() for k in WEIGHTS])
    threshold = survivors.sort(descending=True).values[keep - 1]
    assert (survivors == threshold).sum() == 1, "no tie at the threshold: the hand rule is exact"
    return {k: prev[k] & (state[k].abs() >= threshold) for k in WEIGHTS}


N_WEIGHTS = 20 * 16 + 16 * 4


def test_full_rewind_saves_nothing_kept_and_copies_start_from_the_masked_theta_k(finished):
    assert finished.cfg.pruning.rewind == "full"
    assert not list(finished.dir.glob("stages/**/kept.safetensors"))
    assert all(finished.load_kept(m) is None for m in ("dense", "imp-k0-r1", "distilled.dm-k0-r2", "combined.dm.r1-k0-r2"))
    assert "kept" not in finished.stage_info(mask_key("imp-k0-r1"))
    theta0, masks = finished.load_state("init"), finished.load_masks("imp-k0-r1")
    by_hand = _train_by_hand(finished, _start(theta0, masks), masks, on_synthetic=False)
    stored = finished.load_state(copies_key("imp-k0-r1", 0, 0), "a")
    assert all(torch.equal(by_hand[n], stored[n]) for n in stored), "bit-identical to the whole state rewound to theta_0"


def test_weights_rewind_copies_keep_the_biases_of_the_network_imp_pruned(finished_weights):
    run = finished_weights
    theta0, masks = run.load_state("init"), run.load_masks("imp-k0-r1")
    pruned = run.load_state(copies_key("dense", 0, 0), "a")  # IMP round 1 prunes round 0's copy A
    kept = run.load_kept("imp-k0-r1")
    assert kept is not None and sorted(kept) == BIASES == run.stage_info(mask_key("imp-k0-r1"))["kept"]
    assert all(torch.equal(kept[n], pruned[n]) for n in BIASES)
    assert all(not torch.equal(kept[n], theta0[n]) for n in BIASES), "trained biases differ from the init's"
    stored = run.load_state(copies_key("imp-k0-r1", 0, 0), "a")
    start = run.start_state("imp-k0-r1", 0)  # what the copies (and a surface's rewind point) start from
    assert all(torch.equal(start[n].cpu(), v) for n, v in _start(theta0, masks, pruned).items())
    by_hand = _train_by_hand(run, _start(theta0, masks, pruned), masks, on_synthetic=False)
    assert all(torch.equal(by_hand[n], stored[n]) for n in stored)
    full = _train_by_hand(run, _start(theta0, masks), masks, on_synthetic=False)
    assert any(not torch.equal(full[n], stored[n]) for n in stored), "a full rewind would have trained another copy"
    # round 2 prunes that copy A, and its own copies keep that copy's biases in turn
    assert all(torch.equal(run.load_kept("imp-k0-r2")[n], stored[n]) for n in BIASES)
    for name, m in run.load_masks("imp-k0-r2").items():
        assert torch.equal(m, _prune_by_hand(stored, masks, round(N_WEIGHTS * 0.64))[name])


@pytest.mark.parametrize("mode", ["full", "weights"])
def test_distilled_round_2_trains_from_theta_0_weights_and_round_1s_biases_rebuilt_by_hand(finished, finished_weights, mode):
    run = finished if mode == "full" else finished_weights
    theta0, syn = run.load_state("init"), run.synthetic_dataset("dm")
    dense = dense_masks(build_model(run.cfg.model, run.data.input_shape, NUM_CLASSES, run.cfg.seed))
    r1_net = _train_by_hand(run, theta0, None, on_synthetic=True, data=syn)  # round 1: the dense init on the synthetic set
    r1 = _prune_by_hand(r1_net, dense, round(N_WEIGHTS * 0.8))
    assert all(torch.equal(r1[k], run.load_masks("distilled.dm-k0-r1")[k]) for k in WEIGHTS)
    kept = r1_net if mode == "weights" else None
    r2_net = _train_by_hand(run, _start(theta0, r1, kept), r1, on_synthetic=True, data=syn)
    r2 = _prune_by_hand(r2_net, r1, round(N_WEIGHTS * 0.64))
    assert all(torch.equal(r2[k], run.load_masks("distilled.dm-k0-r2")[k]) for k in WEIGHTS)
    if mode == "weights":
        assert all(torch.equal(run.load_kept("distilled.dm-k0-r1")[n], r1_net[n]) for n in BIASES)
        assert all(torch.equal(run.load_kept("distilled.dm-k0-r2")[n], r2_net[n]) for n in BIASES)
        # the control and the combined source keep what they pruned: the subset-trained net, distilled round 1's real copy A
        combined_from = run.load_state(copies_key("distilled.dm-k0-r1", 0, 0), "a")
        assert all(torch.equal(run.load_kept("combined.dm.r1-k0-r2")[n], combined_from[n]) for n in BIASES)
        assert any(not torch.equal(run.load_kept("subset.dm-k0-r1")[n], r1_net[n]) for n in BIASES)


def test_weights_rewind_masks_differ_from_full_rewinds_from_round_2_on(finished, finished_weights):
    for mid in ("imp-k0-r1", "distilled.dm-k0-r1", "random-k0-r1"):  # round 1 prunes networks trained from the same start
        assert all(torch.equal(finished.load_masks(mid)[k], finished_weights.load_masks(mid)[k]) for k in WEIGHTS)
    for mid in ("imp-k0-r2", "distilled.dm-k0-r2"):
        assert any(not torch.equal(finished.load_masks(mid)[k], finished_weights.load_masks(mid)[k]) for k in WEIGHTS), mid


def test_dense_and_random_subnetworks_rewind_in_full_under_weights(finished_weights):
    run = finished_weights
    assert run.load_kept("dense") is None and run.load_kept("random-k0-r1") is None
    assert "kept" not in run.stage_info(mask_key("random-k0-r1"))
    theta0 = run.load_state("init")
    masks = run.load_masks("random-k0-r1")
    stored = run.load_state(copies_key("random-k0-r1", 0, 0), "a")
    by_hand = _train_by_hand(run, _start(theta0, masks), masks, on_synthetic=False)
    assert all(torch.equal(by_hand[n], stored[n]) for n in stored), "no trained network chose a random mask: nothing to keep"


# ---------------------------------------------------------------------------------------------
# The matched subset trains with the synthetic set's own recipe, learned lr included


def _learned_lr_run(tmp_path, use_learned_lr: bool, lr: float) -> Run:
    cfg = study(
        pruning={"mask_sources": ["dense", "distilled.dm", "subset.dm"], "rounds": 1},
        synthetic={**STUDY["synthetic"], "use_learned_lr": use_learned_lr, "evaluate_runs": 0},
    )
    run = Run(StudyConfig.model_validate(cfg), tmp_path)
    by_key = {s.key: s for s in run.stages}
    run.write_manifest()
    for key in ("init", synthetic_key("dm")):
        run.execute(by_key[key])
    s = run.synthetic_set("dm")
    s.lr = lr  # as MTT would have learned it; DM learns none, so the test sets one
    s.save(run.stage_dir(synthetic_key("dm")))
    for key in (mask_key("distilled.dm-k0-r1"), mask_key("subset.dm-k0-r1")):
        run.execute(by_key[key])
    return run


@pytest.mark.parametrize("use_learned_lr", [True, False])
def test_the_matched_subset_trains_at_the_sets_learned_lr_with_the_same_recipe(tmp_path, use_learned_lr):
    learned = 0.3
    run = _learned_lr_run(tmp_path, use_learned_lr, learned)
    theta0 = run.load_state("init")
    dense = dense_masks(build_model(run.cfg.model, run.data.input_shape, NUM_CLASSES, run.cfg.seed))
    keep = round(N_WEIGHTS * 0.8)

    def mask_at(lr: float, data) -> dict:
        model = build_model(run.cfg.model, run.data.input_shape, NUM_CLASSES, run.cfg.seed)
        model.load_state_dict(theta0)
        cfg = run.cfg.synthetic.train.model_copy(update={"lr": lr})  # the synthetic recipe, only the lr chosen
        res = train(model, data, cfg, run.synthetic_augmenter, data_seed=PAIR[0], augment_seed=PAIR[0])
        return _prune_by_hand(res.state, dense, keep)

    expected_lr = learned if use_learned_lr else run.cfg.synthetic.train.lr
    other_lr = run.cfg.synthetic.train.lr if use_learned_lr else learned
    for source, data in (("subset.dm", run.subset_dataset("dm")), ("distilled.dm", run.synthetic_dataset("dm"))):
        stored = run.load_masks(f"{source}-k0-r1")
        assert all(torch.equal(stored[k], mask_at(expected_lr, data)[k]) for k in WEIGHTS), source
        assert any(not torch.equal(stored[k], mask_at(other_lr, data)[k]) for k in WEIGHTS), f"{source}: the lr must matter"
    assert run.stage_info(mask_key("subset.dm-k0-r1"))["examples"] == run.stage_info(mask_key("distilled.dm-k0-r1"))["examples"]


# ---------------------------------------------------------------------------------------------
# stability.rounds: untested IMP rounds train copy A alone


ROUNDS_STUDY = {
    "name": "rounds",
    "data": {"name": "teacher"},
    "model": {"arch": "mlp", "hidden": [16]},
    "train": {"lr": 0.1, "batch_size": 100, "epochs": 1},
    "pruning": {"mask_sources": ["dense", "imp"], "rounds": 2, "rewind_steps": [0]},
    "stability": {"pairs": [[1, 2]], "alphas": 3, "splits": ["test"], "rounds": [0, 2]},
}


def test_untested_rounds_train_copy_a_only(tmp_path):
    cfg = StudyConfig.model_validate(ROUNDS_STUDY)
    stages = {s.key: s for s in plan(cfg)}
    r1 = copies_key("imp-k0-r1", 0, 0)
    assert r1 in stages and stages[r1].params["n_copies"] == 1
    assert path_key("imp-k0-r1", 0, 0) not in stages
    assert stages[copies_key("imp-k0-r2", 0, 0)].params["n_copies"] == 2
    assert path_key("imp-k0-r2", 0, 0) in stages

    run = Run(cfg, tmp_path)
    rows = run.run()
    assert [(r["source"], r["round"]) for r in rows] == [("dense", 0), ("imp", 0), ("imp", 2)]
    saved = sorted(p.name for p in run.stage_dir(r1).glob("*.safetensors"))
    assert saved == ["a.safetensors"]
    assert len(run.stage_info(r1)["copies"]) == 1
    # the chain still counts the untested round's training
    assert run.stage_info(mask_key("imp-k0-r2"))["examples"] == 2 * (2000 // 100) * 100
    assert rows[2]["sparsity"] == pytest.approx(36.0, abs=100 / 384)


# ---------------------------------------------------------------------------------------------
# Importing a synthetic set


def _import_study(path) -> dict:
    return {
        "name": "import",
        "data": {"name": "teacher"},
        "model": {"arch": "mlp", "hidden": [16]},
        "train": {"lr": 0.1, "batch_size": 100, "epochs": 1},
        "pruning": {"mask_sources": ["dense", "distilled.imp1"], "rounds": 1, "rewind_steps": [0]},
        "stability": {"pairs": [[1, 2]], "alphas": 3, "splits": ["test"]},
        "synthetic": {
            "sets": {"imp1": {"method": "import", "path": str(path)}},
            "train": {"lr": 0.05, "batch_size": 4, "epochs": 2, "schedule": "constant"},
            "evaluate_runs": 0,
        },
    }


def test_an_imported_set_drives_distilled_pruning(tmp_path):
    rng = np.random.default_rng(3)
    images = rng.standard_normal((8, 20)).astype(np.float32)
    labels = np.repeat(np.arange(4), 2).astype(np.int64)
    path = tmp_path / "set.npz"
    np.savez(path, images=images, labels=labels)
    run = Run(StudyConfig.model_validate(_import_study(path)), tmp_path / "runs")
    rows = run.run()
    stored = run.synthetic_set("imp1")
    assert torch.equal(stored.images, torch.from_numpy(images))
    assert torch.equal(stored.labels, torch.from_numpy(labels))
    # what making an imported set cost is unknown unless its source reports it; 0 would claim it was free
    assert run.stage_info(synthetic_key("imp1"))["real_examples"] is None
    info = run.stage_info(mask_key("distilled.imp1-k0-r1"))
    assert info["examples"] == 2 * (8 // 4) * 4
    assert [(r["source"], r["round"]) for r in rows] == [("dense", 0), ("distilled.imp1", 0), ("distilled.imp1", 1)]
    assert rows[-1]["sparsity"] == pytest.approx(20.0, abs=0.1)
    assert rows[-1]["distill_points"] is None and rows[1]["distill_points"] == 0  # round 0 is the dense net: nothing distilled


def test_an_imported_sets_reported_cost_is_recorded_and_unknown_is_shown_as_such(tmp_path, capsys):
    from lmc_core.studies.commands import print_synthetic_table, print_table

    rng = np.random.default_rng(3)
    path = tmp_path / "set.npz"
    np.savez(path, images=rng.standard_normal((8, 20)).astype(np.float32), labels=np.repeat(np.arange(4), 2).astype(np.int64))
    unknown = Run(StudyConfig.model_validate(_import_study(path)), tmp_path / "runs")
    print_table(unknown.run())
    print_synthetic_table(unknown.synthetic_table())
    out = capsys.readouterr().out
    # the cell may wrap between "distilling" and "(imported set)" in a narrow table
    assert "unknown distilling" in out and "(imported set)" in out and "unknown" in out.split("real examples used")[-1]
    reported = _import_study(path)
    reported["synthetic"]["sets"]["imp1"]["real_examples"] = 500_000_000
    run = Run(StudyConfig.model_validate(reported), tmp_path / "runs")
    rows = run.run()
    assert run.stage_info(synthetic_key("imp1"))["real_examples"] == 500_000_000
    assert rows[-1]["distill_points"] == 500_000_000  # round 1 inherits the set's cost, as a distilled set's would


def test_a_reported_cost_is_only_for_imported_sets():
    with pytest.raises(ValidationError, match="real_examples is for imported sets"):
        StudyConfig.model_validate({"synthetic": {"sets": {"dm": {"method": "dm", "real_examples": 5}}}})


def test_an_imported_set_of_the_wrong_shape_names_the_expected_one(tmp_path):
    path = tmp_path / "bad.npz"
    np.savez(path, images=np.zeros((8, 21), np.float32), labels=np.repeat(np.arange(4), 2))
    run = Run(StudyConfig.model_validate(_import_study(path)), tmp_path / "runs")
    with pytest.raises(ValueError, match=r"\(N, 20\)"):
        run.run()
    assert not run.is_done(synthetic_key("imp1"))


# ---------------------------------------------------------------------------------------------
# CutMix in the batch stream


@pytest.fixture(scope="module")
def digits():
    return load_dataset(DataConfig(name="digits"))


def _plain(kind: str = "image") -> Augmenter:
    return Augmenter(DataConfig(), kind)


def test_cutmix_batches_have_soft_targets_over_at_most_two_classes(digits):
    mixed = BatchStream(digits, 32, 5, 6, _plain(), cutmix=1.0)
    plain = BatchStream(digits, 32, 5, 6, _plain())  # same data order: the order stream is separate
    for _ in range(5):
        xm, t = next(mixed)
        xp, y = next(plain)
        assert t.dtype == torch.float32 and t.shape == (32, 10)
        assert torch.allclose(t.sum(1), torch.ones(32), atol=1e-6)
        assert ((t > 0).sum(1) <= 2).all() and (t >= 0).all()
        assert (t[torch.arange(32), y] > 0).all(), "each example keeps a share of its own label"
        assert xm.shape == xp.shape and not torch.equal(xm, xp)


def test_cutmix_zero_is_the_plain_stream(digits):
    off = BatchStream(digits, 32, 5, 6, _plain(), cutmix=0.0)
    plain = BatchStream(digits, 32, 5, 6, _plain())
    for _ in range(50):  # past an epoch boundary (1347 = 42 x 32 + 3: 43 batches)
        xo, yo = next(off)
        xp, yp = next(plain)
        assert yo.dtype == torch.int64
        assert torch.equal(xo, xp) and torch.equal(yo, yp)


def test_training_with_cutmix_counts_the_same_examples(digits):
    cfg = TrainConfig(lr=0.05, batch_size=64, epochs=1, schedule="constant")
    model = build_model(ModelConfig(arch="mlp", hidden=[16]), digits.input_shape, 10, 0)
    a = train(copy.deepcopy(model), digits, cfg, _plain(), data_seed=1, augment_seed=1)
    b = train(copy.deepcopy(model), digits, cfg.model_copy(update={"cutmix": 0.5}), _plain(), data_seed=1, augment_seed=1)
    assert a.examples == b.examples == 1347  # every example once: 21 batches of 64 and one of 3
    assert any(not torch.equal(a.state[k], b.state[k]) for k in a.state), "cutmix changed the training"


# ---------------------------------------------------------------------------------------------
# DSA as the real-data augmentation


def test_dsa_augments_images_deterministically(digits):
    aug = Augmenter(DataConfig(name="digits", augmentation="dsa"), "image")
    assert aug.active
    x = digits.x_train[:64]
    one = aug(x, torch.Generator().manual_seed(7))
    two = aug(x, torch.Generator().manual_seed(7))
    assert one.shape == x.shape and not torch.equal(one, x)
    assert torch.equal(one, two)
    others = [aug(x, torch.Generator().manual_seed(s)) for s in range(8, 12)]
    assert any(not torch.equal(one, o) for o in others)


def test_dsa_auto_is_inactive_on_vectors():
    aug = Augmenter(DataConfig(name="teacher", augmentation="dsa"), "vector")
    assert not aug.active
    x = torch.randn(5, 20)
    assert aug(x, torch.Generator().manual_seed(0)) is x


def test_cutmix_on_vectors_is_refused_with_the_fix():
    from lmc_core.data.augment import Augmenter
    from lmc_core.data.dataset import load_dataset
    from lmc_core.foundations.config import DataConfig
    from lmc_core.train.loop import BatchStream

    data = load_dataset(DataConfig(name="teacher"))
    with pytest.raises(ValueError, match="set cutmix to 0"):
        BatchStream(data, 10, 0, 0, Augmenter(DataConfig(name="teacher"), "vector"), cutmix=0.5)
