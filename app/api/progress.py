"""A study's live progress as the store holds it (the sync task mirrors it from Redis about once a second)."""

from __future__ import annotations

import statistics
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from . import studies
from .models import Job, Study

TERMINAL = ("finished", "failed", "cancelled")
# Stages that will still run: failed, stopped and cancelled ones do not (until a retry), so they add no time.
PENDING_WORK = ("running", "queued", "waiting", "pending")


def _seconds(stage: dict[str, Any]) -> float | None:
    """Return how long a finished stage computed: stage.json's `seconds`, else its job's end minus start."""
    value = (stage.get("metrics") or {}).get("seconds")
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
        return float(value)
    try:
        start, end = datetime.fromisoformat(str(stage["started_at"])), datetime.fromisoformat(str(stage["ended_at"]))
    except (KeyError, TypeError, ValueError):
        return None
    return max((end - start).total_seconds(), 0.0)


def estimate_eta(stages: list[dict[str, Any]], workers: int) -> float | None:
    """Return the seconds left for a study: median finished-stage duration x stages left / workers that can share them.

    A running stage counts as the fraction it has left (1 - step/total when it reports steps, else 1). The divisor
    is the live workers on the study's queue, but never more than the stages left (one stage runs on one worker).
    None when there is no basis: no stage has finished yet, or no worker listens on the queue.
    """
    durations = [d for d in (_seconds(s) for s in stages if s.get("status") == "done") if d is not None]
    left = [s for s in stages if s.get("status") in PENDING_WORK]
    if not left:
        return 0.0 if durations else None
    if not durations or workers <= 0:
        return None
    units = 0.0
    for s in left:
        step, total = s.get("step"), s.get("total")
        if s.get("status") == "running" and isinstance(step, (int, float)) and isinstance(total, (int, float)) and total > 0:
            units += min(max(1.0 - step / total, 0.0), 1.0)
        else:
            units += 1.0
    return statistics.median(durations) * units / min(workers, len(left))


def job_public(job: Job) -> dict[str, Any]:
    """Return a stage job as JobOut expects it."""
    return {
        "key": job.key,
        "kind": job.kind,
        "status": job.status,
        "step": job.step,
        "total": job.total,
        "eta_s": job.eta_s,
        "metrics": job.metrics,
        "message": job.message,
        "error": job.error,
        "worker": job.worker,
        "started_at": job.started_at,
        "ended_at": job.ended_at,
    }


def snapshot(session: Session, study: Study) -> dict[str, Any]:
    """Return the study's progress: stages done of total, the running and failed stages, ETA, log tail and error."""
    jobs = studies.jobs(session, study.id)
    mirrored = study.progress or {}
    done, total = study.stages_done, study.stages_total
    return {
        "study_id": study.id,
        "status": study.status,
        "done": done,
        "total": total,
        "fraction": done / total if total else None,
        "eta_s": mirrored.get("eta_s") if study.status in ("queued", "running") else None,
        "running": [job_public(j) for j in jobs if j.status == "running"],
        "failed": [job_public(j) for j in jobs if j.status in ("failed", "stopped")],
        "log_tail": list(mirrored.get("log_tail") or []),
        "error": study.error,
        "updated_at": study.updated_at,
    }
