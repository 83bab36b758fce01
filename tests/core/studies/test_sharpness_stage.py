"""The sharpness stage: the Hessian diagonal of one common network read at the weights each mask source removes.

Each test checks a property that is false if the science is wrong: the diagonal equals the diagonal of the full
Hessian from torch.autograd.functional.hessian, the removed set is exactly (kept at r-1) and not (kept at r), the
statistics and p-values on constructed cases have known values, the null keeps per-layer counts and draws only
from the weights the source could remove, and on a real study the stage reads the right network and masks.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError
from torch import nn

from lmc_core.foundations.config import SharpnessSpec
from lmc_core.foundations.layout import copies_key, mask_key, parse_key, sharpness_key
from lmc_core.hessian.operator import HessianOperator
from lmc_core.prune.magnitude import prunable_names
from lmc_core.studies.plan import plan
from lmc_core.studies.run import Run
from lmc_core.studies.stages.sharpness import (
    common_diagonal,
    flat_mask,
    log_edges,
    previous_mask,
    removal_statistics,
)
from lmc_core.studies.validation import validate_config


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models: on a shared 2-core machine a second intra-op thread only adds contention."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def hand_diagonal(model: nn.Module, x: torch.Tensor, y: torch.Tensor, names: list[str]) -> np.ndarray:
    """Return diag of the full float64 Hessian of the mean cross-entropy w.r.t. the weights `names`, flattened in order."""
    model = copy.deepcopy(model).double().eval()
    params = dict(model.named_parameters())
    shapes = [params[n].shape for n in names]
    flat = torch.cat([params[n].detach().reshape(-1) for n in names])

    def loss(v: torch.Tensor) -> torch.Tensor:
        chunks, at = {}, 0
        for n, s in zip(names, shapes, strict=True):
            chunks[n] = v[at : at + s.numel()].reshape(s)
            at += s.numel()
        out = torch.func.functional_call(model, {**{k: p.detach() for k, p in params.items()}, **chunks}, (x.double(),))
        return F.cross_entropy(out, y)

    h = torch.autograd.functional.hessian(loss, flat)
    return torch.diagonal(h).numpy()


def stats(diag, sizes, previous, current, draws=300, seed=0, threshold=None, edges=None):
    return removal_statistics(
        np.asarray(diag, dtype=np.float64),
        sizes,
        np.asarray(previous, dtype=bool),
        np.asarray(current, dtype=bool),
        threshold=float(np.quantile(diag, 0.9)) if threshold is None else threshold,
        edges=log_edges(np.asarray(diag, dtype=np.float64), 10) if edges is None else edges,
        draws=draws,
        seed=seed,
        purpose="test",
    )


# ---------------------------------------------------------------------------------------------
# The diagonal and the removed sets on a tiny model with hand-made masks


def test_removed_statistics_equal_the_hand_computation_from_the_full_hessian():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    x, y = torch.randn(16, 3), torch.randint(0, 2, (16,))
    names = prunable_names(model)
    op = HessianOperator(model, [(x, y)], parameters=names, dtype=torch.float64)
    diag, about, stderr = common_diagonal(op, SharpnessSpec(examples=16))
    h = hand_diagonal(model, x, y, names)
    np.testing.assert_allclose(diag, h, rtol=1e-9, atol=1e-12)
    assert about["estimate"] is False and about["examples"] == 16 and about["coordinates"] == 20 and stderr is None

    # Hand-made masks on the 12 + 8 weights: layer 0 keeps 10 then 7, layer 1 keeps 8 then 6.
    prev = {"0.weight": torch.ones(4, 3, dtype=torch.bool), "2.weight": torch.ones(2, 4, dtype=torch.bool)}
    prev["0.weight"][0, :2] = False  # pruned before round r: never "removed" at round r
    cur = {k: v.clone() for k, v in prev.items()}
    cur["0.weight"][1, :] = False  # flat 3, 4, 5
    cur["2.weight"][1, 2:] = False  # flat 12 + 6, 12 + 7
    numbers, arrays = stats(diag, op.sizes, flat_mask(prev, names), flat_mask(cur, names), threshold=float(np.quantile(h, 0.9)))
    removed = [3, 4, 5, 18, 19]
    assert arrays["removed_index"].tolist() == removed
    assert (numbers["removed"], numbers["removed_per_layer"], numbers["candidates"], numbers["revived"]) == (5, [3, 2], 18, 0)
    got = numbers["statistics"]
    assert got["mean"]["observed"] == pytest.approx(np.mean(h[removed]), rel=1e-9)
    assert got["median"]["observed"] == pytest.approx(np.median(h[removed]), rel=1e-9)
    assert got["top_decile_fraction"]["observed"] == pytest.approx(np.mean(h[removed] > np.quantile(h, 0.9)))


def test_a_hutchinson_diagonal_is_labelled_an_estimate_and_its_errors_cover_the_exact_one():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    x, y = torch.randn(16, 3), torch.randint(0, 2, (16,))
    names = prunable_names(model)
    op = HessianOperator(model, [(x, y)], parameters=names, dtype=torch.float64)
    diag, about, stderr = common_diagonal(op, SharpnessSpec(diagonal="hutchinson", diagonal_samples=4000, seed=3))
    h = hand_diagonal(model, x, y, names)
    assert about["estimate"] is True and about["method"] == "hutchinson" and about["samples"] == 4000
    assert stderr is not None and np.all(np.abs(diag - h) <= 5 * stderr + 1e-12)
    assert np.abs(diag - h).max() > 0  # an estimate, not the exact diagonal relabelled


# ---------------------------------------------------------------------------------------------
# Permutation statistics on constructed cases


def test_removing_the_k_sharpest_gives_the_smallest_p_value():
    diag = np.arange(200, dtype=np.float64)
    previous = np.ones(200, bool)
    current = diag < 190  # the 10 sharpest go
    draws = 300
    numbers, arrays = stats(diag, [200], previous, current, draws=draws)
    for name in ("mean", "median", "top_decile_fraction"):
        s = numbers["statistics"][name]
        assert s["p_greater"] == 1 / (1 + draws), name
        assert s["p_less"] == 1.0, name  # every draw is at most the observed value
    mean = numbers["statistics"]["mean"]
    assert mean["observed"] == 194.5
    # The null of a mean of 10 drawn without replacement from 0..199: mean 99.5, sd sqrt((N^2 - 1)/12 / n (N - n)/(N - 1)).
    sd = np.sqrt((200**2 - 1) / 12 / 10 * 190 / 199)
    assert mean["null_mean"] == pytest.approx(99.5, abs=4 * sd / np.sqrt(draws))
    assert mean["null_interval"] == pytest.approx([99.5 - 1.96 * sd, 99.5 + 1.96 * sd], abs=9.0)
    assert arrays["null_mean"].shape == (draws,)
    # The flattest 10 instead: the other tail.
    numbers, _ = stats(diag, [200], previous, diag >= 10, draws=draws)
    assert numbers["statistics"]["mean"]["p_less"] == 1 / (1 + draws) and numbers["statistics"]["mean"]["p_greater"] == 1.0


def test_the_null_keeps_per_layer_counts():
    # Layer 0 is uniformly sharp (100), layer 1 uniformly flat (1); the source removes 3 weights of layer 1.
    # A null that ignored layers would call that "flatter than random" (p_less ~ 0); with the counts kept every draw
    # removes 3 weights of value 1, exactly as observed.
    diag = np.array([100.0] * 10 + [1.0] * 10)
    previous = np.ones(20, bool)
    current = previous.copy()
    current[[11, 14, 17]] = False
    numbers, _ = stats(diag, [10, 10], previous, current, draws=200)
    mean = numbers["statistics"]["mean"]
    assert numbers["removed_per_layer"] == [0, 3]
    assert (mean["observed"], mean["null_interval"], mean["p_greater"], mean["p_less"]) == (1.0, [1.0, 1.0], 1.0, 1.0)


def test_random_removals_give_calibrated_p_values_and_the_null_draws_only_from_the_candidates():
    # Weights pruned before round r are very sharp (10): a null that drew from them would make every source look flat.
    # Uniform removals of 20 of the 100 candidates must give p <= 0.05 about 5 % of the time in both tails.
    g = np.random.default_rng(7)
    trials, low, high = 200, 0, 0
    for t in range(trials):
        diag = np.where(np.arange(200) < 100, g.random(200), 10.0)
        previous = np.arange(200) < 100
        current = previous.copy()
        current[g.choice(100, 20, replace=False)] = False
        numbers, _ = stats(diag, [200], previous, current, draws=99, seed=t)
        low += numbers["statistics"]["mean"]["p_less"] <= 0.05
        high += numbers["statistics"]["mean"]["p_greater"] <= 0.05
    # Binomial(200, 0.05): mean 10, sd 3.1.
    assert 2 <= low <= 20 and 2 <= high <= 20, (low, high)


def test_masks_that_are_not_nested_remove_previous_minus_current_and_count_revivals():
    # A random source draws every round afresh: weights pruned at r-1 can be kept at r.
    diag = np.linspace(0.1, 2.0, 12)
    previous = np.array([1, 1, 1, 1, 0, 0, 1, 1, 0, 1, 1, 1], bool)
    current = np.array([1, 0, 1, 0, 1, 0, 0, 1, 1, 1, 0, 1], bool)
    numbers, arrays = stats(diag, [6, 6], previous, current, draws=50)
    assert arrays["removed_index"].tolist() == [1, 3, 6, 10]
    assert numbers["removed_per_layer"] == [2, 2] and numbers["revived"] == 2 and numbers["candidates"] == 9
    assert numbers["statistics"]["mean"]["observed"] == pytest.approx(diag[[1, 3, 6, 10]].mean())


def test_histograms_share_log_edges_and_count_only_positive_entries():
    diag = np.array([1e-3, 1e-2, 1e-1, 1.0, 10.0, -0.5, 0.0, 3.0])
    edges = log_edges(diag, 4)
    assert edges[0] == pytest.approx(-3.0) and edges[-1] == pytest.approx(1.0)
    previous = np.ones(8, bool)
    current = np.array([0, 1, 0, 1, 0, 0, 0, 1], bool)  # removes 1e-3, 1e-1, 10, -0.5, 0
    numbers, arrays = stats(diag, [8], previous, current, draws=100, edges=edges)
    removed = diag[~current]
    expected, _ = np.histogram(np.log10(removed[removed > 0]), bins=edges)
    assert arrays["counts"].tolist() == expected.tolist() and numbers["nonpositive"] == 2
    assert np.all(arrays["band_low"] <= arrays["band_mean"]) and np.all(arrays["band_mean"] <= arrays["band_high"])
    # every draw removes 5 of the 8, whose 6 positive values all lie within the edges
    assert arrays["band_mean"].sum() == pytest.approx(5 * 6 / 8, rel=0.1)


def test_a_source_that_removes_nothing_has_no_statistics():
    numbers, arrays = stats(np.arange(6.0), [6], np.ones(6, bool), np.ones(6, bool), draws=10)
    assert numbers["removed"] == 0 and numbers["statistics"]["mean"] is None and "band_low" not in arrays


# ---------------------------------------------------------------------------------------------
# Config, keys and plan

STUDY: dict[str, Any] = {
    "data": {"name": "teacher"},
    "model": {"arch": "mlp", "hidden": [16]},
    "train": {"lr": 0.1, "batch_size": 50, "epochs": 2},
    "pruning": {"mask_sources": ["dense", "imp", "random", "distilled.dm"], "rounds": 2, "rewind_steps": [0]},
    "stability": {"pairs": [[1, 2]], "alphas": 3, "splits": ["test"]},
    "synthetic": {
        "sets": {"dm": {"method": "dm", "ipc": 3, "iterations": 3, "batch_real": 32}},
        "train": {"lr": 0.05, "batch_size": 4, "epochs": 3, "schedule": "constant"},
        "evaluate_runs": 0,
    },
    "analysis": {"sharpness": {"examples": 64, "random_draws": 200}},
}


def with_(section: str, **values: Any) -> dict[str, Any]:
    out = copy.deepcopy(STUDY)
    out[section] = {**out[section], **values}
    return out


def test_the_key_reads_back_as_a_sharpness_stage():
    ref = parse_key(sharpness_key(625, 2))
    assert (ref.kind, ref.k, ref.round, ref.mask, ref.pair) == ("sharpness", 625, 2, None, None)


def test_previous_reference_needs_real_imp():
    cfg = with_("pruning", mask_sources=["dense", "random", "distilled.dm"])
    with pytest.raises(ValidationError, match="reference='dense'"):
        validate_config(cfg)
    cfg["analysis"] = {"sharpness": {"reference": "dense"}}
    validate_config(cfg)


def test_plan_has_one_stage_per_round_reading_the_right_network_and_masks():
    stages = {s.key: s for s in plan(validate_config(STUDY))}
    r1, r2 = stages[sharpness_key(0, 1)], stages[sharpness_key(0, 2)]
    assert [s.key for s in stages.values() if s.kind == "sharpness"] == [r1.key, r2.key]
    assert r2.params["sources"] == ["imp", "random", "distilled.dm"]  # dense has no round 2
    assert r1.deps[0] == copies_key("dense", 0, 0) and r2.deps[0] == copies_key("imp-k0-r1", 0, 0)
    for source in ("imp", "random", "distilled.dm"):
        assert {mask_key(f"{source}-k0-r1"), mask_key(f"{source}-k0-r2")} <= set(r2.deps)
    dense = {s.key: s for s in plan(validate_config(with_("analysis", sharpness={"reference": "dense"})))}
    assert dense[sharpness_key(0, 2)].deps[0] == copies_key("dense", 0, 0)
    picked = {s.key for s in plan(validate_config(with_("analysis", sharpness={}, rounds=[2], mask_sources=["imp"])))}
    assert sharpness_key(0, 1) not in picked and sharpness_key(0, 2) in picked
    assert not any(s.kind == "sharpness" for s in plan(validate_config(with_("analysis", sharpness=None))))


def test_a_combined_source_starts_from_the_distilled_mask():
    assert previous_mask("combined.dm.r1", 0, 2) == "distilled.dm-k0-r1"
    assert previous_mask("combined.dm.r1", 0, 3) == "combined.dm.r1-k0-r2"
    assert previous_mask("random", 5, 1) == "dense"


# ---------------------------------------------------------------------------------------------
# End to end on the smallest settings


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    run = Run(validate_config(STUDY), tmp_path_factory.mktemp("sharpness"))
    run.run()
    return run


def test_the_stage_reads_the_reference_copy_at_every_sources_mask_differences(finished):
    run = finished
    for r, ref in ((1, "dense"), (2, "imp-k0-r1")):
        info = run.stage_info(sharpness_key(0, r))
        assert info["reference_network"] == copies_key(ref, 0, 0) and info["reference_copy"] == "a"
        arrays = dict(np.load(run.stage_dir(sharpness_key(0, r)) / "sharpness.npz", allow_pickle=False))
        model = run.fresh_model()
        model.load_state_dict(run.load_state(copies_key(ref, 0, 0), "a"))
        names = info["layers"]
        h = hand_diagonal(model, run.data.x_train[:64], run.data.y_train[:64], names)
        np.testing.assert_allclose(arrays["diagonal"], h, rtol=2e-3, atol=1e-6)  # float32 operator vs float64 by hand
        in_ref = flat_mask(run.load_masks(ref), names)
        assert info["diagonal"]["estimate"] is False and info["diagonal"]["examples"] == 64
        for source in ("imp", "random", "distilled.dm"):
            got = info["removal"][source]
            prev = flat_mask(run.load_masks("dense" if r == 1 else f"{source}-k0-r1"), names)
            cur = flat_mask(run.load_masks(f"{source}-k0-r{r}"), names)
            removed = prev & ~cur
            per_layer = [int(m.sum()) for m in np.split(removed, np.cumsum(info["layer_sizes"])[:-1])]
            assert got["removed"] == int(removed.sum()) > 0 and got["removed_per_layer"] == per_layer
            assert got["revived"] == int((~prev & cur).sum())
            assert got["outside_reference"] == int((removed & ~in_ref).sum())
            assert arrays[f"removed_index__{source}"].tolist() == np.flatnonzero(removed).tolist()
            assert got["statistics"]["mean"]["observed"] == pytest.approx(h[removed].mean(), rel=2e-3)
            assert got["random_draws"] == 200 and arrays[f"null_mean__{source}"].shape == (200,)
        # IMP prunes the reference copy itself: nothing it removes at round r is already pruned there
        assert info["removal"]["imp"]["outside_reference"] == 0


def test_the_table_and_lmc_show_carry_each_sources_numbers_with_n_and_the_null(finished, capsys):
    from lmc_core.studies.commands import print_sharpness_table
    from lmc_core.studies.tables import sharpness_table

    rows = sharpness_table(finished)
    assert {(r["round"], r["source"]) for r in rows} >= {(1, "imp"), (2, "distilled.dm"), (2, "random")}
    for row in rows:
        info = finished.stage_info(sharpness_key(row["rewind_step"], row["round"]))
        stat = info["removal"][row["source"]]["statistics"]["mean"]
        assert row["mean_removed"] == stat["observed"] and row["null_interval"] == stat["null_interval"]
        assert row["removed"] == info["removal"][row["source"]]["removed"] and row["random_draws"] == 200
        assert row["diagonal_estimate"] is False
    print_sharpness_table(rows)
    out = " ".join(capsys.readouterr().out.split())  # the console wraps long lines
    assert "H_ii exact (ggn-exact)" in out and "copies/dense/k0/p0" in out and "copies/imp-k0-r1/k0/p0" in out
    assert "200 draws" in out and "smallest possible 0.005" in out
