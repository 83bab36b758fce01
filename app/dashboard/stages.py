"""Stage keys as people read them: 'surface/distilled.dm-k625-r2/k625/p0' -> 'distilled IMP (dm), round 2, k=625, pair 0'."""

from __future__ import annotations

from . import palette
from .figures import parse_mask


def label(key: str) -> str:
    """Return a reader's label for an analysis stage key (surface/..., hessian/..., path/...)."""
    parts = key.split("/")
    if len(parts) < 2:
        return key
    m = parse_mask(parts[1])
    bits = [palette.label(m["source"]), f"round {m['round']}"]
    bits += [p.replace("k", "k=", 1) if p.startswith("k") else p.replace("p", "pair ", 1) for p in parts[2:]]
    return ", ".join(bits)


def options(keys: list[str]) -> list[dict[str, str]]:
    """Return dropdown options for stage keys."""
    return [{"label": label(k), "value": k} for k in keys]


def source_of(key: str) -> str:
    """Return the mask source of an analysis stage key."""
    parts = key.split("/")
    return parse_mask(parts[1])["source"] if len(parts) > 1 else key
