"""Mask sources: where a study's sparse masks come from. One module per kind of source, one line each below.

A source is named `kind` or `kind.arg[.arg]` (e.g. `imp`, `distilled.dm`, `combined.dm.r2`). Listing and
parsing names imports no torch (the API validates configs with them); building a mask does.
"""

from __future__ import annotations

from lmc_core.foundations.registry import Registry
from lmc_core.prune.sources.base import MaskContext, MaskSource

MASK_SOURCES: Registry[type[MaskSource]] = Registry(
    "mask source",
    {
        "dense": "lmc_core.prune.sources.dense:Dense",
        "imp": "lmc_core.prune.sources.imp:IMP",
        "combined": "lmc_core.prune.sources.imp:Combined",
        "distilled": "lmc_core.prune.sources.distilled:DistilledIMP",
        "subset": "lmc_core.prune.sources.distilled:SubsetIMP",
        "random": "lmc_core.prune.sources.random:RandomPruning",
        "random_global": "lmc_core.prune.sources.random:GlobalRandomPruning",
    },
)

register_mask_source = MASK_SOURCES.register


def get_mask_source(name: str) -> MaskSource:
    """Return the source called `name`, or a ValueError listing the registered kinds and their syntax."""
    kind, *args = name.split(".")
    cls = MASK_SOURCES.get(kind) if kind in MASK_SOURCES else None
    if cls is None or len(args) != cls.arity:
        known = ", ".join(c.usage for _, c in MASK_SOURCES.items())
        raise ValueError(f"unknown mask source {name!r}; registered: {known}")
    return cls(name, args)


def missing_controls(mask_sources: list[str]) -> list[str]:
    """Return the matched-subset controls `mask_sources` lacks: `subset.<set>` for every `distilled.<set>` without one.

    Without it, a distilled set's masks cannot be told from those of any tiny set trained with the same recipe and lr.
    """
    sets = [s.removeprefix("distilled.") for s in mask_sources if s.startswith("distilled.")]
    return [f"subset.{s}" for s in sets if f"subset.{s}" not in mask_sources]


__all__ = ["MASK_SOURCES", "MaskContext", "MaskSource", "get_mask_source", "missing_controls", "register_mask_source"]
