"""Mask sources: where a study's sparse masks come from, one pluggable class per source.

A source names, for each (rewind step k, round r >= 1), the stages its mask needs and builds the
mask from their outputs. Round 0 of every source is the dense network, shared by all sources.
Register a new source (distilled IMP, say) with `@register_mask_source`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from .pruning import Masks, dense_masks, eligible_names, magnitude_prune, random_masks_like, round_sparsity
from .seeding import derive_seed

if TYPE_CHECKING:  # the study imports this module; the reverse import is only for type hints
    from .studies import Run

DENSE = "dense"


def mask_id(source: str, k: int, r: int) -> str:
    """Return the id of a source's round-r mask found with rewind step k; every round 0 is 'dense'."""
    return DENSE if r == 0 else f"{source}-k{k}-r{r}"


def mask_key(mid: str) -> str:
    return f"mask/{mid}"


def copies_key(mid: str, k: int, pair: int) -> str:
    return f"copies/{mid}/k{k}/p{pair}"


def path_key(mid: str, k: int, pair: int) -> str:
    return f"path/{mid}/k{k}/p{pair}"


def rewind_key(k: int) -> str:
    return "init" if k == 0 else f"parent/k{k}"


class MaskSource:
    """Base class: `max_round(cfg)` rounds, each mask built by `build` from the outputs of `dependencies`."""

    name: ClassVar[str]

    def max_round(self, run: Run) -> int:
        return run.cfg.pruning.rounds

    def dependencies(self, run: Run, k: int, r: int) -> list[str]:
        raise NotImplementedError

    def build(self, run: Run, k: int, r: int) -> tuple[Masks, int]:
        """Return the round-r mask and the training examples spent to find it (cumulative over rounds)."""
        raise NotImplementedError


MASK_SOURCES: dict[str, type[MaskSource]] = {}


def register_mask_source(cls: type[MaskSource]) -> type[MaskSource]:
    MASK_SOURCES[cls.name] = cls
    return cls


def get_mask_source(name: str) -> MaskSource:
    """Return an instance of the registered source `name`, or a KeyError listing the registered ones."""
    if name not in MASK_SOURCES:
        raise KeyError(f"unknown mask source {name!r}; registered: {sorted(MASK_SOURCES)}")
    return MASK_SOURCES[name]()


@register_mask_source
class Dense(MaskSource):
    """The unpruned network: round 0 only."""

    name = "dense"

    def max_round(self, run: Run) -> int:
        return 0


@register_mask_source
class IMP(MaskSource):
    """Iterative magnitude pruning on real data: prune copy A of pair 0 trained in the previous round, rewind to k."""

    name = "imp"

    def dependencies(self, run: Run, k: int, r: int) -> list[str]:
        prev = mask_id(self.name, k, r - 1)
        return [copies_key(prev, k, 0)] + ([mask_key(prev)] if r > 1 else [])

    def build(self, run: Run, k: int, r: int) -> tuple[Masks, int]:
        prev = mask_id(self.name, k, r - 1)
        prev_masks = dense_masks(run.template) if r == 1 else run.load_masks(prev)
        prev_copies = copies_key(prev, k, 0)
        p = run.cfg.pruning
        masks = magnitude_prune(
            run.load_state(prev_copies, "a"),
            prev_masks,
            round_sparsity(p.rate, r),
            scope=p.scope,
            eligible=eligible_names(list(prev_masks), p.keep_first_dense, p.keep_last_dense),
        )
        spent_before = run.parent_examples(k) if r == 1 else run.stage_info(mask_key(prev))["examples"]
        return masks, spent_before + run.stage_info(prev_copies)["copies"][0]["examples"]


@register_mask_source
class RandomPruning(MaskSource):
    """Random masks with IMP's per-layer counts at the same round (uniform per layer when the study has no IMP)."""

    name = "random"

    def dependencies(self, run: Run, k: int, r: int) -> list[str]:
        return [mask_key(mask_id("imp", k, r))] if "imp" in run.cfg.pruning.mask_sources else []

    def build(self, run: Run, k: int, r: int) -> tuple[Masks, int]:
        p = run.cfg.pruning
        if "imp" in p.mask_sources:
            reference = run.load_masks(mask_id("imp", k, r))
        else:
            dense = dense_masks(run.template)
            reference = magnitude_prune(
                {n: m.float() for n, m in dense.items()},  # all ties: layerwise counts only matter here
                dense,
                round_sparsity(p.rate, r),
                scope="layerwise",
                eligible=eligible_names(list(dense), p.keep_first_dense, p.keep_last_dense),
            )
        return random_masks_like(reference, derive_seed(p.seed, f"random-k{k}-r{r}")), 0
