"""Random pruning: the baseline every magnitude-based mask is compared with."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lmc_core.foundations.layout import DENSE, mask_id, mask_key
from lmc_core.prune.sources.base import MaskContext, MaskSource

if TYPE_CHECKING:
    from lmc_core.foundations.config import StudyConfig
    from lmc_core.foundations.events import Callback
    from lmc_core.foundations.types import Masks


class RandomPruning(MaskSource):
    """Random masks with IMP's per-layer counts at the same round (uniform per layer when the study has no IMP)."""

    kind, usage = "random", "random"

    def dependencies(self, cfg: StudyConfig, k: int, r: int) -> list[str]:
        return [mask_key(mask_id("imp", k, r))] if "imp" in cfg.pruning.mask_sources else []

    def build(self, ctx: MaskContext, k: int, r: int, callback: Callback) -> tuple[Masks, dict[str, Any]]:
        from lmc_core.foundations.seeding import derive_seed  # torch: keep validation torch-free
        from lmc_core.prune.magnitude import dense_masks, eligible_names, magnitude_prune, random_masks_like, round_sparsity

        p = ctx.cfg.pruning
        if "imp" in p.mask_sources:
            reference = ctx.load_masks(mask_id("imp", k, r))
        else:
            dense = dense_masks(ctx.template)
            reference = magnitude_prune(
                {n: m.float() for n, m in dense.items()},  # all ties: layerwise counts only matter here
                dense,
                round_sparsity(p.rate, r),
                scope="layerwise",
                eligible=eligible_names(list(dense), p.keep_first_dense, p.keep_last_dense),
            )
        return random_masks_like(reference, derive_seed(p.seed, f"random-k{k}-r{r}")), {"examples": 0}


class GlobalRandomPruning(MaskSource):
    """The authors' random control: each round removes a uniformly random 20 % of the surviving weights, ranked globally.

    McDermott & Cummings' random_prune.py applies torch's global RandomUnstructured pruning round after round, so layer
    counts follow layer sizes and round r's mask lies inside round r-1's. `random` instead copies IMP's per-layer counts,
    which isolates *which* weights IMP keeps from *how many per layer*; `random_global` is the authors' control.
    """

    kind, usage = "random_global", "random_global"

    def dependencies(self, cfg: StudyConfig, k: int, r: int) -> list[str]:
        prev = mask_id(self.name, k, r - 1)
        return [] if prev == DENSE else [mask_key(prev)]

    def build(self, ctx: MaskContext, k: int, r: int, callback: Callback) -> tuple[Masks, dict[str, Any]]:
        import torch  # torch: keep validation torch-free

        from lmc_core.foundations.seeding import derive_seed, generator
        from lmc_core.prune.magnitude import eligible_names, magnitude_prune, round_sparsity

        p = ctx.cfg.pruning
        prev = ctx.load_masks(mask_id(self.name, k, r - 1))
        seed = derive_seed(p.seed, f"random-global-k{k}-r{r}")
        # Uniform scores ranked globally under the previous mask: a uniformly random subset of the survivors, exact counts.
        scores = {n: torch.rand(m.shape, generator=generator(seed, f"random-score:{n}")) for n, m in prev.items()}
        eligible = eligible_names(list(prev), p.keep_first_dense, p.keep_last_dense)
        return magnitude_prune(scores, prev, round_sparsity(p.rate, r), scope="global", eligible=eligible), {"examples": 0}
