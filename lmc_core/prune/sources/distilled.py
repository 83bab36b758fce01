"""Distilled pruning (the paper's method): IMP whose training runs on a synthetic set; and its real-subset control."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lmc_core.foundations.layout import DENSE, mask_id, mask_key, rewind_key, synthetic_key
from lmc_core.prune.sources.base import Found, MaskContext, PrunesTrained, prune_round, spent_before

if TYPE_CHECKING:
    from lmc_core.data.dataset import Dataset
    from lmc_core.foundations.config import StudyConfig
    from lmc_core.foundations.events import Callback


class DistilledIMP(PrunesTrained):
    """IMP whose training runs on a synthetic set (the paper's distilled pruning): train, prune, rewind to k.

    Round r trains the round-(r - 1) subnetwork from its rewind point: theta_k under the round-(r - 1) mask, with
    the entries a weights-only rewind keeps taken from the network round r - 1 pruned (`pruning.rewind`).
    """

    kind, usage, arity = "distilled", "distilled.<set>", 1

    def __init__(self, name: str, args: list[str]):
        super().__init__(name, args)
        self.set = args[0]

    def problem(self, cfg: StudyConfig) -> str | None:
        if self.set not in cfg.synthetic.sets:
            return f"no synthetic set named {self.set!r}; define it under synthetic.sets (defined: {sorted(cfg.synthetic.sets) or 'none'})"
        return None

    def dependencies(self, cfg: StudyConfig, k: int, r: int) -> list[str]:
        prev = mask_id(self.name, k, r - 1)
        return [synthetic_key(self.set), rewind_key(k)] + ([mask_key(prev)] if prev != DENSE else [])

    def training_data(self, ctx: MaskContext) -> Dataset:
        """Return the set each round trains on."""
        return ctx.synthetic_dataset(self.set)

    def find(self, ctx: MaskContext, k: int, r: int, callback: Callback) -> Found:
        prev = mask_id(self.name, k, r - 1)
        prev_masks = ctx.load_masks(prev)
        result = ctx.train_on_small_set(
            self.training_data(ctx),
            k,
            None if prev == DENSE else prev_masks,
            self.set,
            stage=mask_key(mask_id(self.name, k, r)),
            callback=callback,
            kept=ctx.load_kept(prev),
        )
        spent: dict[str, Any] = spent_before(ctx, prev, k)
        spent["examples"] += result.examples
        if prev == DENSE and self.kind == "distilled":
            spent["distill_examples"] = ctx.stage_info(synthetic_key(self.set))["real_examples"]
        return Found(prune_round(ctx, result.state, prev_masks, r), spent, result.state)


class SubsetIMP(DistilledIMP):
    """The control: IMP trained, with the synthetic recipe, on a random real subset with the synthetic set's class counts."""

    kind, usage, arity = "subset", "subset.<set>", 1

    def training_data(self, ctx: MaskContext) -> Dataset:
        return ctx.subset_dataset(self.set)
