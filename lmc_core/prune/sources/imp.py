"""Real-data iterative magnitude pruning, and IMP continued from a distilled mask."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from lmc_core.foundations.layout import DENSE, copies_key, mask_id, mask_key
from lmc_core.prune.sources.base import Found, MaskContext, PrunesTrained, prune_round, spent_before

if TYPE_CHECKING:
    from lmc_core.foundations.config import StudyConfig
    from lmc_core.foundations.events import Callback


class IMP(PrunesTrained):
    """Iterative magnitude pruning on real data: prune copy A of pair 0 trained in the previous round, rewind to k."""

    kind, usage = "imp", "imp"

    def previous(self, k: int, r: int) -> str:
        """Return the mask id round r starts from."""
        return mask_id(self.name, k, r - 1)

    def dependencies(self, cfg: StudyConfig, k: int, r: int) -> list[str]:
        prev = self.previous(k, r)
        return [copies_key(prev, k, 0)] + ([mask_key(prev)] if prev != DENSE else [])

    def find(self, ctx: MaskContext, k: int, r: int, callback: Callback) -> Found:
        prev = self.previous(k, r)
        trained = copies_key(prev, k, 0)
        state = ctx.load_state(trained, "a")
        masks = prune_round(ctx, state, ctx.load_masks(prev), r)
        spent: dict[str, Any] = spent_before(ctx, prev, k)
        spent["examples"] += ctx.stage_info(trained)["copies"][0]["examples"]
        return Found(masks, spent, state)


class Combined(IMP):
    """Real-data IMP started from a distilled mask at round R (McDermott & Parhi 2025; the authors' combined_prune.py)."""

    kind, usage, arity = "combined", "combined.<set>.r<R>", 2

    def __init__(self, name: str, args: list[str]):
        super().__init__(name, args)
        self.set = args[0]
        match = re.fullmatch(r"r(\d+)", args[1])
        if match is None:
            raise ValueError(f"mask source {name!r}: the start round is written r<R>, e.g. combined.{self.set}.r2")
        self.start = int(match.group(1))

    def problem(self, cfg: StudyConfig) -> str | None:
        if f"distilled.{self.set}" not in cfg.pruning.mask_sources:
            return (
                f"needs distilled.{self.set} among the mask sources (its round-{self.start} subnetwork is trained on real data and pruned)"
            )
        if not 1 <= self.start < cfg.pruning.rounds:
            return f"start round {self.start} must be in [1, pruning.rounds - 1 = {cfg.pruning.rounds - 1}]"
        return None

    def rounds(self, cfg: StudyConfig) -> list[int]:
        return list(range(self.start + 1, cfg.pruning.rounds + 1))

    def previous(self, k: int, r: int) -> str:
        return mask_id(f"distilled.{self.set}", k, r - 1) if r == self.start + 1 else mask_id(self.name, k, r - 1)
