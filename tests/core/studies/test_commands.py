import json
import subprocess
import sys

import pytest

from app.cli import main


def lmc(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "app.cli", *args], capture_output=True, text=True, timeout=600)


def test_presets_lists_every_preset(capsys):
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    for name in ("smoke", "mnist1d", "mnist1d-mlp", "digits-stable", "paper-mini", "paper-mini-mlp", "paper-cifar10"):
        assert name in out


def test_run_prints_the_round_table_and_show_reprints_it(tmp_path):
    small = [
        "--set",
        "train.epochs=2",
        "--set",
        "sweep.steps=[]",
        "--set",
        "pruning.rewind_steps=[0]",
        "--set",
        "stability.alphas=5",
        "--set",
        "synthetic.train.epochs=5",
        "--set",
        "synthetic.sets.dm.iterations=2",
    ]
    res = lmc("run", "--preset", "smoke", "--out", str(tmp_path), "--quiet", *small)
    assert res.returncode == 0, res.stderr + res.stdout
    assert "subnetworks rewound to step k = 0" in res.stdout and "36.0" in res.stdout
    assert "synthetic sets" in res.stdout and "distilled.dm" in res.stdout
    run_dir = next(tmp_path.iterdir())
    shown = lmc("show", str(run_dir), "--json")
    rows = json.loads(shown.stdout)
    assert [(r["source"], r["round"]) for r in rows] == [
        ("dense", 0),
        ("imp", 0),
        ("imp", 1),
        ("imp", 2),
        ("random", 0),
        ("random", 1),
        ("random", 2),
        ("distilled.dm", 0),
        ("distilled.dm", 1),
        ("distilled.dm", 2),
        ("subset.dm", 0),
        ("subset.dm", 1),
        ("subset.dm", 2),
    ]
    assert rows[3]["sparsity"] == pytest.approx(36.0, abs=0.05)


def test_bad_override_names_the_field(tmp_path):
    res = lmc("run", "--preset", "smoke", "--out", str(tmp_path), "--set", "train.lr=-3")
    assert res.returncode == 2
    assert "train.lr" in res.stderr


def test_unknown_preset_lists_the_available(tmp_path):
    res = lmc("run", "--preset", "nope", "--out", str(tmp_path))
    assert res.returncode == 2 and "smoke" in res.stderr


def test_show_on_a_non_run_folder_says_so(tmp_path):
    res = lmc("show", str(tmp_path))
    assert res.returncode == 2 and "not a run directory" in res.stderr


@pytest.mark.slow
def test_smoke_preset_reproduces_the_calibrated_contrast(tmp_path):
    """Measured in calibration runs (docs/results.md): MLP lr 0.1, 20 epochs: barrier 45-50 points at k = 0, 1.4-3.3 at k = 625."""
    res = lmc("run", "--preset", "smoke", "--out", str(tmp_path), "--quiet")
    assert res.returncode == 0, res.stderr + res.stdout
    rows = json.loads(lmc("show", str(next(tmp_path.iterdir())), "--json").stdout)
    sweep = {r["rewind_step"]: r for r in rows if r["source"] == "sweep"}
    assert sweep[0]["error_barrier"] > 20, "the dense MLP at lr 0.1 must be unstable at init"
    assert sweep[625]["error_barrier"] < 8, "and stable once rewound to a quarter of training"
    imp = [r for r in rows if r["source"] == "imp"]
    assert [round(r["sparsity"], 1) for r in imp] == [0.0, 20.0, 36.0]


def _row(barriers: list[float]) -> dict:
    import numpy as np

    return {
        "source": "imp",
        "round": 1,
        "mask": "imp-k0-r1",
        "rewind_step": 0,
        "split": "test",
        "sparsity": 20.0,
        "accuracy": [97.0] * (2 * len(barriers)),
        "error_barrier": float(np.mean(barriers)),
        "error_barrier_std": float(np.std(barriers)),
        "error_barriers": barriers,
        "loss_barrier": 0.1,
        "loss_barrier_std": 0.01,
        "training_points": 1000,
        "distill_points": 0,
        "points_ratio": None,
    }


def test_the_table_says_what_the_spread_is_and_over_how_many_pairs(capsys):
    from lmc_core.studies.commands import print_table

    print_table([_row([10.0, 14.0])])
    out = capsys.readouterr().out
    assert "12.0 ± 2.0 (sd, n=2)" in out  # population sd of (10, 14) is 2.0, over the two seed pairs
    assert "population standard deviation over the seed pairs" in out
    print_table([_row([3.0])])
    out = capsys.readouterr().out
    assert "3.0 (n=1)" in out and "±" not in out.split("barriers on the")[0]


def test_the_ratio_to_real_imp_is_shown_measured_and_with_distilling_or_unknown(capsys):
    from lmc_core.studies.commands import print_table

    known = {
        **_row([1.0]),
        "source": "distilled.dm",
        "training_points": 400,
        "distill_points": 600,
        "points_ratio": 10.0,
        "points_ratio_with_distilling": 4.0,
    }
    imported = {**known, "round": 2, "distill_points": None, "points_ratio_with_distilling": None}
    print_table([known, imported])
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if "10.0x" in line]
    assert len(lines) == 2
    assert "4.00x" in lines[0] and "600 distilling" in lines[0]
    assert "unknown" in lines[1] and "4.00x" not in lines[1]
    assert "measured ratio" in out and "not the paper's accounting" in out


def test_show_names_a_distilled_set_without_its_matched_subset(capsys):
    from lmc_core.studies.commands import print_missing_controls

    print_missing_controls(["dense", "imp", "distilled.dm", "distilled.mtt", "subset.dm"])
    out = " ".join(capsys.readouterr().out.split())
    assert "no matched control for distilled.mtt" in out and "add subset.mtt" in out and "distilled.dm" not in out
    print_missing_controls(["dense", "imp", "distilled.dm", "subset.dm"])
    assert capsys.readouterr().out == ""
