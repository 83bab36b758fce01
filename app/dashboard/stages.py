"""Stage keys as people read them, from the API's readings of them (stage_ref: {key, kind, mask, source, round, k, pair, set}):
surface/distilled.dm-k625-r2/k625/p0 -> 'distilled IMP (dm), round 2, k=625, pair 0'. The dashboard never parses a key itself."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from . import palette


def label(ref: dict[str, Any]) -> str:
    """Return a reader's label for a stage of a subnetwork (surface, hessian, path, copies, mask): source, round, and for
    one pair's stages its rewind step and pair; other stages (no mask source) by their key."""
    if ref.get("source") is None:
        return ref["key"]
    bits = [palette.label(ref["source"]), f"round {ref['round']}"]
    if ref.get("pair") is not None:
        bits += [f"k={ref['k']}", f"pair {ref['pair']}"]
    return ", ".join(bits)


def options(refs: Iterable[dict[str, Any]]) -> list[dict[str, str]]:
    """Return dropdown options (label, value = the stage key) for stage readings."""
    return [{"label": label(r), "value": r["key"]} for r in refs]
