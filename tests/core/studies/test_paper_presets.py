"""The presets, above all the paper's CIFAR protocol (McDermott & Cummings 2023), and running it.

The full protocol needs a GPU and the CIFAR archives; here it must (1) carry the paper's numbers,
(2) stop at once, before any stage, when the data is missing, and (3) run end to end on CPU when
scaled down to a tiny CIFAR-format archive.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lmc_core.foundations.layout import copies_key, mask_key, path_key
from lmc_core.prune.sources import missing_controls
from lmc_core.studies.plan import plan
from lmc_core.studies.presets import PRESETS, preset, preset_names
from tests.helpers.datafiles import write_cifar_archive

PAPER = ["paper-cifar10", "paper-cifar10-resnet18", "paper-cifar100", "paper-cifar100-resnet18"]
REPO = Path(__file__).resolve().parents[3]


def lmc(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = "1"  # tiny models on a shared 2-core machine: a second thread only contends
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return subprocess.run([sys.executable, "-m", "app.cli", *args], capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env)


# ---------------------------------------------------------------------------------------------
# The presets themselves


@pytest.mark.parametrize("name", preset_names())
def test_every_preset_validates_and_plans(name):
    cfg = preset(name)
    assert cfg.name == PRESETS[name]["config"]["name"]
    stages = plan(cfg)
    seen: set[str] = set()
    for s in stages:
        assert set(s.deps) <= seen, f"{name}: {s.key} before its dependencies"
        seen.add(s.key)
    assert PRESETS[name]["description"]


def test_the_expected_presets_exist():
    assert {"paper-mini", "paper-mini-mlp", "paper-mini-combined", *PAPER, "smoke"} <= set(preset_names())


@pytest.mark.parametrize("name", PAPER)
def test_paper_presets_carry_the_paper_protocol(name):
    cfg = preset(name)
    dataset = "cifar100" if "cifar100" in name else "cifar10"
    assert cfg.data.name == dataset
    assert cfg.data.augmentation == "dsa"

    t = cfg.train
    assert (t.optimizer, t.epochs, t.steps, t.lr, t.momentum, t.weight_decay, t.batch_size) == ("sgd", 300, None, 0.01, 0.9, 5e-4, 64)
    assert (t.schedule, t.milestones, t.gamma, t.cutmix) == ("multistep", [200, 250], 0.2, 0.5)

    p = cfg.pruning
    assert (p.rounds, p.rate, p.rewind_steps, p.scope) == (10, 0.2, [0], "global")
    assert {"dense", "imp", "random"} <= set(p.mask_sources)
    distilled = [s for s in p.mask_sources if s.startswith("distilled.")]
    assert distilled, "the paper's subject: IMP trained on distilled sets"

    s = cfg.stability
    assert s.alphas == 11 and s.rounds == [0, 4, 9]

    sets = cfg.synthetic.sets
    assert sorted(d.ipc for d in sets.values()) == [10, 50]
    assert {f"distilled.{n}" for n in sets} == set(distilled)
    for d in sets.values():
        assert d.factor == 2
        net = d.model
        assert net is not None
        assert (net.arch, net.width, net.depth, net.norm) == ("convnet", 128, 3, "instance")

    st = cfg.synthetic.train
    assert (st.lr, st.momentum, st.weight_decay, st.batch_size, st.schedule, st.gamma) == (0.01, 0.9, 5e-4, 64, "multistep", 0.2)
    assert st.epochs == 1000 and st.milestones == [667, 833]

    if name.endswith("resnet18"):
        assert cfg.model.arch == "resnet18"
    else:
        assert (cfg.model.arch, cfg.model.width, cfg.model.depth, cfg.model.norm) == ("convnet", 128, 3, "instance")


def test_paper_plan_tests_rounds_0_4_9_and_trains_copy_a_alone_in_between():
    stages = {s.key: s for s in plan(preset("paper-cifar10"))}
    for r in (4, 9):
        assert stages[copies_key(f"imp-k0-r{r}", 0, 0)].params["n_copies"] == 2
        assert path_key(f"imp-k0-r{r}", 0, 0) in stages
    for r in (1, 2, 3, 5, 6, 7, 8):
        assert stages[copies_key(f"imp-k0-r{r}", 0, 0)].params["n_copies"] == 1
        assert path_key(f"imp-k0-r{r}", 0, 0) not in stages
        # distilled IMP trains on the synthetic set: its untested rounds need no real-data copies at all
        assert copies_key(f"distilled.idc10-k0-r{r}", 0, 0) not in stages


def test_paper_plan_builds_no_mask_beyond_the_last_tested_round():
    keys = {s.key for s in plan(preset("paper-cifar10"))}
    assert mask_key("distilled.idc10-k0-r10") not in keys
    assert mask_key("imp-k0-r10") not in keys
    assert mask_key("random-k0-r3") not in keys, "random masks of untested rounds feed nothing"
    assert mask_key("imp-k0-r3") in keys, "IMP round 4 passes through round 3"


# ---------------------------------------------------------------------------------------------
# Missing data stops the run before any stage


@pytest.mark.parametrize("name, folder", [("paper-cifar10", "cifar-10-batches-py"), ("paper-cifar100", "cifar-100-python")])
def test_run_without_the_data_exits_2_naming_where_it_looked(tmp_path, name, folder):
    t0 = time.monotonic()
    res = lmc("run", "--preset", name, "--out", str(tmp_path / "runs"), "--quiet", cwd=tmp_path, timeout=120)
    elapsed = time.monotonic() - t0
    assert res.returncode == 2, res.stdout + res.stderr
    assert elapsed < 60, f"took {elapsed:.1f} s: the data must be checked before any stage"
    assert str((tmp_path / "data").resolve()) in res.stderr
    assert folder in res.stderr
    assert not (tmp_path / "runs").exists(), "no run directory for a run that cannot start"
    assert sorted(p.name for p in tmp_path.iterdir()) == [], "nothing written in the working folder"


# ---------------------------------------------------------------------------------------------
# The protocol scaled down to a tiny CIFAR-10 archive, end to end through the CLI

N_PER_BATCH, N_TEST = 40, 40  # 5 training batches: 200 training images, random labels
REAL_BATCH, SYN_BATCH, SYN_EPOCHS = 16, 8, 2
DECODED = 10 * 1 * 2 * 2  # 10 classes x ipc 1 x factor 2 squared


def _small_set(name: str) -> list[str]:
    pre = f"synthetic.sets.{name}"
    return [
        "--set",
        f"{pre}.ipc=1",
        "--set",
        f"{pre}.iterations=1",
        "--set",
        f"{pre}.batch_real=4",
        "--set",
        f"{pre}.dc.outer_loop=1",
        "--set",
        f"{pre}.dc.inner_loop=1",
        "--set",
        f"{pre}.model.width=8",
    ]


def test_scaled_down_paper_cifar10_runs_end_to_end(tmp_path):
    data = tmp_path / "cifar"
    archive, arrays = write_cifar_archive(data, num_classes=10, n_per_batch=N_PER_BATCH, n_test=N_TEST)
    assert archive.is_file() and len(arrays.y_train) == 5 * N_PER_BATCH
    out = tmp_path / "runs"
    overrides = [
        "--set",
        f"data.path={data}",
        "--set",
        "model.width=8",
        "--set",
        "train.epochs=1",
        "--set",
        f"train.batch_size={REAL_BATCH}",
        "--set",
        "pruning.rounds=2",
        "--set",
        "pruning.mask_sources=[dense, imp, distilled.idc10, random]",
        "--set",
        "stability.rounds=[0, 1, 2]",
        "--set",
        "stability.alphas=3",
        *_small_set("idc10"),
        *_small_set("idc50"),
        "--set",
        f"synthetic.train.epochs={SYN_EPOCHS}",
        "--set",
        f"synthetic.train.batch_size={SYN_BATCH}",
        "--set",
        "synthetic.evaluate_runs=1",
    ]
    res = lmc("run", "--preset", "paper-cifar10", "--out", str(out), "--quiet", *overrides, cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr

    (run_dir,) = list(out.iterdir())
    config = json.loads((run_dir / "config.json").read_text())
    assert config["train"]["cutmix"] == 0.5 and config["data"]["augmentation"] == "dsa", "the protocol's recipe, only scaled"

    shown = lmc("show", str(run_dir), "--json", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    rows = json.loads(shown.stdout)
    dist = sorted((r for r in rows if r["source"] == "distilled.idc10"), key=lambda r: r["round"])
    assert [r["round"] for r in dist] == [0, 1, 2]
    assert [round(r["sparsity"], 1) for r in dist] == [0.0, 20.0, 36.0]
    for r in rows:
        assert math.isfinite(r["error_barrier"]) and math.isfinite(r["loss_barrier"])

    real_run = 5 * N_PER_BATCH  # one epoch sees every example, the last batch partial (200 = 12 x 16 + 8)
    syn_run = SYN_EPOCHS * DECODED  # 40 = 5 x 8: no partial batch
    imp = {r["round"]: r for r in rows if r["source"] == "imp"}
    for rnd in (1, 2):
        assert imp[rnd]["training_points"] == rnd * real_run
        assert dist[rnd]["training_points"] == rnd * syn_run
        assert dist[rnd]["distill_points"] > 0
        assert dist[rnd]["points_ratio"] == pytest.approx(real_run / syn_run)
    assert {r["source"] for r in rows} == {"dense", "imp", "distilled.idc10", "random"}


# ---------------------------------------------------------------------------------------------
# Controls and rewinding in every preset


@pytest.mark.parametrize("name", preset_names())
def test_every_distilled_set_has_its_matched_subset(name):
    """A set's masks are only evidence for distillation beside IMP on a random real subset of the same size and recipe."""
    sources = preset(name).pruning.mask_sources
    missing = missing_controls(sources)
    assert not missing, f"{name}: distilled sets without their matched-subset control: add {missing} to pruning.mask_sources"


def test_missing_controls_names_the_subset_each_distilled_set_lacks():
    assert missing_controls(["dense", "distilled.dm", "distilled.mtt", "subset.dm", "combined.dm.r2"]) == ["subset.mtt"]
    assert missing_controls(["dense", "subset.dm", "imp"]) == []


@pytest.mark.parametrize("name", preset_names())
def test_every_preset_description_states_its_rewind(name):
    text = PRESETS[name]["description"].lower()
    if preset(name).pruning.rewind == "weights":
        assert "weights-only rewind" in text and "full rewind" not in text
    else:
        assert "full rewind" in text and "weights-only rewind" not in text


@pytest.mark.parametrize("name", PAPER)
def test_paper_presets_rewind_weights_only_as_the_authors_code(name):
    assert preset(name).pruning.rewind == "weights"


# ---------------------------------------------------------------------------------------------
# paper-mini-combined end to end: the combined source and distilled masks found from k > 0, under a weights-only rewind

K = 4  # the late rewind point, in steps
TINY_COMBINED = {
    "model": {"width": 8},
    "train": {"epochs": None, "steps": 12, "eval_batch_size": 1000},
    "pruning": {"rewind_steps": [0, K]},
    "stability": {"alphas": 3, "splits": ["test"]},
    "synthetic": {
        "sets": {"dm": {"iterations": 2, "batch_real": 16}},
        "train": {"epochs": 3, "milestones": [2]},
        "evaluate_runs": 0,
    },
}


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models on a shared machine; and the hand rebuilds below must run with the thread count the study ran with."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def combined_run(tmp_path_factory, one_thread):
    from lmc_core.studies.run import Run

    run = Run(preset("paper-mini-combined", TINY_COMBINED), tmp_path_factory.mktemp("combined"))
    run.run()
    return run


def _hand_prune(state, prev, fraction_kept):
    """Global magnitude pruning by a threshold over the weights `prev` kept: the `keep` largest |w| stay."""
    import torch

    names = list(prev)
    n = sum(prev[k].numel() for k in names)
    keep = round(n * fraction_kept)
    survivors = torch.cat([state[k][prev[k]].abs().flatten() for k in names])
    threshold = survivors.sort(descending=True).values[keep - 1]
    assert (survivors == threshold).sum() == 1, "no tie at the threshold: the hand rule is exact"
    return {k: prev[k] & (state[k].abs() >= threshold) for k in names}


def _model(run):
    from lmc_core.models import build_model

    return build_model(run.cfg.model, run.data.input_shape, run.data.num_classes, run.cfg.seed)


def _start(run, k, mid):
    """The subnetwork's start by hand: theta_k's conv / linear weights under the mask, every other entry from the pruned network."""
    theta = run.load_state("init" if k == 0 else f"parent/k{k}")
    masks = run.load_masks(mid)
    kept = run.load_kept(mid)
    assert kept is not None and set(kept) == set(theta) - set(masks), "a weights-only rewind keeps exactly the non-weight entries"
    return {n: (v * masks[n] if n in masks else kept[n]) for n, v in theta.items()}, masks


def test_paper_mini_combined_runs_end_to_end_with_the_properties_of_each_source(combined_run):
    import torch

    from lmc_core.train.loop import train

    run = combined_run
    cfg = run.cfg
    assert cfg.pruning.rewind == "weights" and cfg.pruning.rewind_steps == [0, K]
    seed = cfg.stability.pairs[0][0]
    rows = run.table()
    got = {(r["source"], r["rewind_step"], r["round"]) for r in rows}
    for k in (0, K):
        assert {("combined.dm.r2", k, 3), ("combined.dm.r2", k, 4), ("distilled.dm", k, 4), ("subset.dm", k, 4)} <= got

    # exact sparsities: 1 - 0.8^r of all prunable weights, to one weight, for every source, rewind step and round
    n = sum(m.numel() for m in run.load_masks("dense").values())
    for r in rows:
        if r["round"]:
            masks = run.load_masks(r["mask"])
            assert sum(int(m.sum()) for m in masks.values()) == round(n * 0.8 ** r["round"]), r["mask"]

    # the parent run is the dense network trained K steps: theta_K
    model = _model(run)
    model.load_state_dict(run.load_state("init"))
    parent = train(
        model, run.data, cfg.train, run.augmenter, data_seed=cfg.stability.parent_seed, augment_seed=cfg.stability.parent_seed, end_step=K
    ).state
    assert all(torch.equal(parent[n], v) for n, v in run.load_state(f"parent/k{K}").items())

    # a distilled mask found from k = K starts from theta_K: train theta_K on the synthetic set, prune 20 %
    syn = run.synthetic_dataset("dm")
    model = _model(run)
    model.load_state_dict(parent)
    trained = train(model, syn, cfg.synthetic.train, run.synthetic_augmenter, data_seed=seed, augment_seed=seed).state
    r1 = _hand_prune(trained, run.load_masks("dense"), 0.8)
    stored = run.load_masks(f"distilled.dm-k{K}-r1")
    assert all(torch.equal(r1[k], stored[k]) for k in stored)
    assert any(not torch.equal(stored[k], run.load_masks("distilled.dm-k0-r1")[k]) for k in stored), "theta_K is not theta_0"
    kept = run.load_kept(f"distilled.dm-k{K}-r1")
    assert kept is not None and all(torch.equal(kept[n], trained[n]) for n in kept), "it keeps the synthetic-trained biases"

    # combined.dm.r2 round 3 = magnitude pruning of distilled round 2's subnetwork trained on real data, rebuilt by hand
    for k in (0, K):
        start, masks = _start(run, k, f"distilled.dm-k{k}-r2")
        model = _model(run)
        model.load_state_dict(start)
        copy_a = train(model, run.data, cfg.train, run.augmenter, data_seed=seed, augment_seed=seed, masks=masks, start_step=k).state
        stored_a = run.load_state(f"copies/distilled.dm-k{k}-r2/k{k}/p0", "a")
        assert all(torch.equal(copy_a[n], stored_a[n]) for n in stored_a), f"k={k}: distilled round 2's copy A"
        r3 = _hand_prune(copy_a, masks, 0.8**3)
        combined = run.load_masks(f"combined.dm.r2-k{k}-r3")
        assert all(torch.equal(r3[name], combined[name]) for name in combined), f"k={k}"
        assert all(torch.equal(run.load_kept(f"combined.dm.r2-k{k}-r3")[n], copy_a[n]) for n in kept)
        # and it differs from distilled round 3, which pruned the synthetic-trained network instead
        assert any(not torch.equal(combined[name], run.load_masks(f"distilled.dm-k{k}-r3")[name]) for name in combined)
