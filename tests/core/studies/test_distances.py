"""Hamming distances between masks (issue 13, point 16): by hand on tiny masks, against chance by sampling, and end to end."""

from typing import Any

import numpy as np
import pytest
import torch

from lmc_core.foundations.config import StudyConfig
from lmc_core.foundations.layout import distances_key, mask_key, parse_key
from lmc_core.studies import commands, tables
from lmc_core.studies.plan import plan
from lmc_core.studies.run import Run
from lmc_core.studies.stages.distances import mask_distance


def _masks(**layers: list[Any]) -> dict[str, torch.Tensor]:
    return {name: torch.tensor(v, dtype=torch.bool) for name, v in layers.items()}


def test_distance_between_hand_made_masks():
    a = _masks(w=[[1, 1, 0, 0], [1, 0, 1, 0]], v=[1, 1, 1, 0])
    b = _masks(w=[[1, 0, 0, 0], [1, 1, 1, 1]], v=[0, 1, 1, 0])
    d = mask_distance(a, b)
    # w differs at (0, 1), (1, 1), (1, 3); v at 0: 4 of 12 weights. Both keep w (0, 0), (1, 0), (1, 2) and v 1, 2: 5;
    # either keeps 7 + 7 - 5 = 9. Chance: w 4 + 5 - 2 * 4 * 5 / 8 = 4, v 3 + 2 - 2 * 3 * 2 / 4 = 2, so 6 / 12.
    assert (d["differ"], d["total"], d["kept_a"], d["kept_b"], d["overlap"]) == (4, 12, 7, 7, 5)
    assert d["hamming"] == pytest.approx(1 / 3) and d["jaccard"] == pytest.approx(5 / 9) and d["chance"] == pytest.approx(0.5)
    assert d["layer_hamming"] == {"w": pytest.approx(3 / 8), "v": pytest.approx(1 / 4)}
    assert mask_distance(b, a)["differ"] == 4, "a distance is symmetric"
    same = mask_distance(a, a)
    assert (same["differ"], same["jaccard"]) == (0, 1.0)
    flipped = mask_distance(a, {k: ~v for k, v in a.items()})
    assert (flipped["hamming"], flipped["overlap"]) == (1.0, 0)


def test_chance_is_the_mean_distance_of_random_masks_with_the_same_layer_counts():
    """Sampling 4000 pairs of random masks with fixed per-layer kept counts averages to `chance` (hypergeometric mean)."""
    rng = np.random.default_rng(0)
    sizes, kept_a, kept_b = (50, 30), (20, 27), (35, 6)

    def draw(kept: tuple[int, ...]) -> dict[str, torch.Tensor]:
        out = {}
        for i, (n, k) in enumerate(zip(sizes, kept, strict=True)):
            m = np.zeros(n, dtype=bool)
            m[rng.choice(n, k, replace=False)] = True
            out[f"l{i}"] = torch.from_numpy(m)
        return out

    sampled = np.mean([mask_distance(draw(kept_a), draw(kept_b))["hamming"] for _ in range(4000)])
    chance = mask_distance(draw(kept_a), draw(kept_b))["chance"]
    assert sampled == pytest.approx(chance, abs=0.004)  # the sample mean's standard error is about 0.001


def test_masks_of_different_networks_are_refused():
    with pytest.raises(ValueError, match=r"different layers: only in the first \['v'\]"):
        mask_distance(_masks(w=[1, 0], v=[1]), _masks(w=[1, 0]))
    with pytest.raises(ValueError, match=r"w: mask shapes differ, \(2,\) and \(3,\)"):
        mask_distance(_masks(w=[1, 0]), _masks(w=[1, 0, 1]))


def test_distances_key_round_trips():
    ref = parse_key(distances_key(625, 3))
    assert (ref.kind, ref.k, ref.round, ref.mask, ref.pair) == ("distances", 625, 3, None, None)


STUDY: dict[str, Any] = {
    "name": "distances-tiny",
    "data": {"name": "teacher"},
    "model": {"arch": "mlp", "hidden": [8]},
    "train": {"lr": 0.1, "batch_size": 50, "epochs": 2},
    "pruning": {"mask_sources": ["dense", "imp", "random"], "rounds": 2, "rewind_steps": [0]},
    "stability": {"pairs": [[1, 2]], "alphas": 3, "splits": ["test"], "rounds": [0, 2]},
}


def test_plan_compares_every_tested_round_two_sources_reach():
    stages = {s.key: s for s in plan(StudyConfig.model_validate(STUDY))}
    assert [k for k, s in stages.items() if s.kind == "distances"] == [distances_key(0, 2)]  # round 1 is untested, 0 is dense
    assert stages[distances_key(0, 2)].deps == (mask_key("imp-k0-r2"), mask_key("random-k0-r2"))
    alone = StudyConfig.model_validate({**STUDY, "pruning": {**STUDY["pruning"], "mask_sources": ["dense", "imp"]}})
    assert not any(s.kind == "distances" for s in plan(alone)), "one pruned source has nothing to be compared with"


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cfg = {**STUDY, "pruning": {**STUDY["pruning"], "rounds": 1}, "stability": {**STUDY["stability"], "rounds": None}}
        run = Run(StudyConfig.model_validate(cfg), tmp_path_factory.mktemp("distances"))
        run.run()
    finally:
        torch.set_num_threads(threads)
    return run


def test_imp_against_random_at_round_1_counts_the_differing_weights(finished, capsys):
    imp, rnd = finished.load_masks("imp-k0-r1"), finished.load_masks("random-k0-r1")
    differ = sum(int((imp[n] != rnd[n]).sum()) for n in imp)
    total = sum(m.numel() for m in imp.values())
    rows = tables.distance_table(finished)
    assert len(rows) == 1
    row = rows[0]
    assert (row["source_a"], row["source_b"], row["rewind_step"], row["round"]) == ("imp", "random", 0, 1)
    assert (row["init_a"], row["init_b"]) == (finished.cfg.seed, finished.cfg.seed)
    assert (row["differ"], row["total"]) == (differ, total) and row["hamming"] == differ / total
    assert differ > 0, "IMP keeps the largest weights, random pruning any: their masks differ"
    assert row["kept_a"] == row["kept_b"] == sum(int(m.sum()) for m in imp.values()), "random matches IMP's per-layer counts"
    commands.print_distance_table(rows)
    out = capsys.readouterr().out
    assert "imp vs random" in out and f"{differ:,} / {total:,}" in out and f"{100 * differ / total:.2f}" in out
