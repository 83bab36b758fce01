"""Reconciliation: a study whose jobs Redis lost (e.g. it restarted empty) is resubmitted; finished stages are kept."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import redis

from . import defaults
from .status import study_record, study_status
from .submit import submit_study


def reconcile_study(
    conn: redis.Redis, study_id: str, config: dict[str, Any], run_id: str, artifact_root: str | Path, queue: str = defaults.DEFAULT_QUEUE
) -> str | None:
    """Resubmit a study that lost its jobs (e.g. Redis restarted empty) and return the new plan job id, or None if nothing was lost.

    Call it for studies the store believes queued or running: a study that is finished, cancelled, has a plan job
    waiting or running, or whose every unfinished stage still has a job (even a failed one) is left alone.
    """
    if "cancelled" in study_record(conn, study_id):
        return None
    status = study_status(conn, study_id, run_id, artifact_root)
    if status["state"] == "finished":
        return None
    if status["plan_job"]["status"] in ("queued", "started", "deferred", "scheduled"):
        return None
    if not status["stages"]:  # no plan file yet: only a plan job that vanished needs redoing
        return submit_study(conn, study_id, config, artifact_root, queue) if status["plan_job"]["status"] is None else None
    if not status["missing"]:
        return None
    return submit_study(conn, study_id, config, artifact_root, queue)
