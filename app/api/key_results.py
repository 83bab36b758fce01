"""A study's key results, the three numbers the study list shows and sorts by, computed from its results table.

- final accuracy: the test accuracy (mean of the copies, %) at the last finished round of the main mask source;
- sparsity reached: the sparsity (%) of that same subnetwork, so the two read together;
- largest barrier: the largest test error barrier (percentage points) of the main mask source's subnetworks, over every
  round and rewind step: how unstable the study's subnetworks get. (The dense network at k = 0 is left out unless it is
  the main source: it is the reference every study shares, large by design, and would decide every sort.)

The main mask source is the first one in `pruning.mask_sources` that is not `dense` (dense alone when it is the only
one); with several rewind steps, the first of `pruning.rewind_steps` that reached that round. Rows are the worker's
summary.json `table` (lmc_core's Run.table()).
"""

from __future__ import annotations

import math
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from .models import Result, Study

FIELDS = ("final_accuracy", "largest_barrier", "sparsity_reached")
DIGITS = 4  # rounding keeps the comparison in `apply` from seeing float noise as a change


def main_source(config: dict[str, Any] | None) -> str | None:
    """Return the study's main mask source: the first non-dense entry of pruning.mask_sources (or dense, or None)."""
    sources = list(((config or {}).get("pruning") or {}).get("mask_sources") or [])
    return next((s for s in sources if s != "dense"), sources[0] if sources else None)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return round(float(value), DIGITS)


def compute(table: list[dict[str, Any]], config: dict[str, Any] | None) -> dict[str, float | None]:
    """Return {final_accuracy, largest_barrier, sparsity_reached}; None for what the table cannot tell yet."""
    out: dict[str, float | None] = dict.fromkeys(FIELDS)
    main = main_source(config)
    rows = [r for r in table if r.get("source") == main and isinstance(r.get("round"), int)]
    if not rows:
        return out
    barriers = [b for b in (_number(r.get("error_barrier")) for r in rows) if b is not None]
    out["largest_barrier"] = max(barriers) if barriers else None
    last = max(r["round"] for r in rows)
    at_last = [r for r in rows if r["round"] == last]
    steps = list(((config or {}).get("pruning") or {}).get("rewind_steps") or [])
    # Table rows come rewind step by rewind step already; ordering by the config's list says so explicitly.
    at_last.sort(key=lambda r: steps.index(r.get("rewind_step")) if r.get("rewind_step") in steps else len(steps))
    row = at_last[0]
    out["final_accuracy"] = _number(row.get("accuracy_mean"))
    out["sparsity_reached"] = _number(row.get("sparsity"))
    return out


def apply(study: Study, table: list[dict[str, Any]]) -> bool:
    """Set the study's key-result columns from `table` (not committed); return True when one changed."""
    values = compute(table, study.config)
    changed = False
    for name, value in values.items():
        if getattr(study, name) != value:
            setattr(study, name, value)
            changed = True
    return changed


def backfill(session: Session) -> int:
    """Fill the key results of studies that have a results table but none yet (rows older than the columns); return how many.

    Committed. Run once per API process (the sync's first tick); studies whose table is still empty are left to the sync.
    """
    rows = session.execute(
        select(Study, Result.table).join(Result, Result.study_id == Study.id).where(Study.largest_barrier.is_(None))
    ).all()
    n = 0
    for study, table in rows:
        if table and apply(study, table):
            n += 1
    session.commit()
    return n
