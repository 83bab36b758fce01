"""A study's live progress as the store holds it (the sync task mirrors it from Redis about once a second)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from . import studies
from .models import Job, Study

TERMINAL = ("finished", "failed", "cancelled")


def job_public(job: Job) -> dict[str, Any]:
    """Return a stage job as JobOut expects it."""
    return {"key": job.key, "kind": job.kind, "status": job.status, "step": job.step, "total": job.total, "eta_s": job.eta_s,
            "metrics": job.metrics, "message": job.message, "error": job.error, "worker": job.worker,
            "started_at": job.started_at, "ended_at": job.ended_at}


def snapshot(session: Session, study: Study) -> dict[str, Any]:
    """Return the study's progress: stages done of total, the running and failed stages, ETA, log tail and error."""
    jobs = studies.jobs(session, study.id)
    mirrored = study.progress or {}
    done, total = study.stages_done, study.stages_total
    return {
        "study_id": study.id, "status": study.status, "done": done, "total": total,
        "fraction": done / total if total else None,
        "eta_s": mirrored.get("eta_s") if study.status == "running" else None,
        "running": [job_public(j) for j in jobs if j.status == "running"],
        "failed": [job_public(j) for j in jobs if j.status in ("failed", "stopped")],
        "log_tail": list(mirrored.get("log_tail") or []), "error": study.error, "updated_at": study.updated_at,
    }
