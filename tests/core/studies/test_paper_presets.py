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
    assert {"paper-mini", "paper-mini-mlp", *PAPER, "smoke"} <= set(preset_names())


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

    real_run = (5 * N_PER_BATCH // REAL_BATCH) * REAL_BATCH
    syn_run = SYN_EPOCHS * (DECODED // SYN_BATCH) * SYN_BATCH
    imp = {r["round"]: r for r in rows if r["source"] == "imp"}
    for rnd in (1, 2):
        assert imp[rnd]["training_points"] == rnd * real_run
        assert dist[rnd]["training_points"] == rnd * syn_run
        assert dist[rnd]["distill_points"] > 0
        assert dist[rnd]["points_ratio"] == pytest.approx(real_run / syn_run)
    assert {r["source"] for r in rows} == {"dense", "imp", "distilled.idc10", "random"}
