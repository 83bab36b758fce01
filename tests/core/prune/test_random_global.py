"""The authors' random control (`random_global`): a uniformly random share of the survivors per round, ranked globally."""

from __future__ import annotations

from typing import Any

import torch

from lmc_core.foundations.config import StudyConfig
from lmc_core.foundations.events import no_callback
from lmc_core.foundations.layout import DENSE, mask_id
from lmc_core.prune.sources import get_mask_source

# Two layers of very different size: per-layer counts then tell global ranking from IMP-matched counts.
SHAPES = {"big.weight": (200, 50), "small.weight": (10, 10)}
TOTAL = 200 * 50 + 10 * 10


class Context:
    """The slice of MaskContext the source uses: the config and the masks of earlier rounds."""

    def __init__(self, seed: int = 0):
        self.cfg = StudyConfig.model_validate({"pruning": {"mask_sources": ["dense", "random_global"], "rounds": 3, "seed": seed}})
        self.masks: dict[str, Any] = {DENSE: {n: torch.ones(s, dtype=torch.bool) for n, s in SHAPES.items()}}

    def load_masks(self, mid: str) -> Any:
        return self.masks[mid]


def build_rounds(ctx: Context, rounds: int = 3) -> list[dict[str, torch.Tensor]]:
    source = get_mask_source("random_global")
    out = []
    for r in range(1, rounds + 1):
        masks, spent = source.build(ctx, 0, r, no_callback)  # type: ignore[arg-type]  # the slice of MaskContext it uses
        assert spent == {"examples": 0}
        ctx.masks[mid(r)] = masks
        out.append(masks)
    return out


def mid(r: int) -> str:
    return mask_id("random_global", 0, r)


def test_exact_global_counts_nested_rounds_and_dependencies():
    ctx = Context()
    masks = build_rounds(ctx)
    kept_before = {n: torch.ones(s, dtype=torch.bool) for n, s in SHAPES.items()}
    for r, m in enumerate(masks, start=1):
        assert sum(int(v.sum()) for v in m.values()) == round(TOTAL * 0.8**r)
        assert all(not (m[n] & ~kept_before[n]).any() for n in SHAPES), "a round only removes survivors of the last"
        kept_before = m
    source = get_mask_source("random_global")
    assert source.dependencies(ctx.cfg, 0, 1) == []
    assert source.dependencies(ctx.cfg, 0, 2) == [f"mask/{mid(1)}"]


def test_layers_lose_weights_in_proportion_to_their_size_not_by_imps_counts():
    """Over 40 seeds the small layer keeps 0.8 of its weights in round 1 on average, as uniform global sampling gives."""
    fractions = []
    for seed in range(40):
        (m,) = build_rounds(Context(seed), rounds=1)
        fractions.append(float(m["small.weight"].float().mean()))
    mean = sum(fractions) / len(fractions)
    # hypergeometric sd of one draw: sqrt(0.8 * 0.2 / 100 * (1 - 100 / 10100)) = 0.040; of the mean of 40: 0.0063
    assert abs(mean - 0.8) < 4 * 0.0063
    assert len(set(fractions)) > 1, "counts per layer vary between seeds: they are not fixed per layer"


def test_seeds_give_different_masks_and_the_same_seed_the_same():
    a = build_rounds(Context(0), rounds=1)[0]
    b = build_rounds(Context(0), rounds=1)[0]
    c = build_rounds(Context(1), rounds=1)[0]
    assert all(torch.equal(a[n], b[n]) for n in SHAPES)
    assert any(not torch.equal(a[n], c[n]) for n in SHAPES)


def test_it_validates_and_needs_no_imp_unlike_the_imp_matched_random():
    from lmc_core.studies.validation import validate_config

    cfg = validate_config({"pruning": {"mask_sources": ["dense", "imp", "random", "random_global"]}})
    assert get_mask_source("random").dependencies(cfg, 0, 1) == [f"mask/{mask_id('imp', 0, 1)}"]
    assert get_mask_source("random_global").dependencies(cfg, 0, 1) == []
