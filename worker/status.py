"""A study's status as the API shows it, read from the run's plan and stage files and its RQ jobs (never from torch).

The files are the truth about what is done (a stage file is written last); RQ says what is queued, running or
failed and carries each running job's progress; the study's Redis hash says whether it was cancelled.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import redis
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus

from lmc_core.foundations import layout

from . import defaults, keys
from .connection import SERIALIZER, job_status, read_hash
from .runlog import log_tail
from .runs import run_dir

_STAGE_STATUS = {
    JobStatus.QUEUED: "queued",
    JobStatus.SCHEDULED: "queued",
    JobStatus.DEFERRED: "waiting",
    JobStatus.STARTED: "running",
    JobStatus.FAILED: "failed",
    JobStatus.STOPPED: "stopped",
    JobStatus.CANCELED: "cancelled",
    JobStatus.FINISHED: "pending",  # finished without a stage file: rerun on resubmit
}
_stage_cache: dict[str, tuple[float, dict[str, Any]]] = {}
_STAGE_CACHE_SIZE = 4096


def study_record(conn: redis.Redis, study_id: str) -> dict[str, str]:
    """Return a study's Redis hash: run id, queue, artifact root, plan job, and `cancelled` once cancelled."""
    return read_hash(conn, keys.study_key(study_id))


def iso_time(value: datetime | float | None) -> str | None:
    """Return a datetime or a Unix time as ISO 8601 (Unix times in UTC), or None."""
    if value is None:
        return None
    if isinstance(value, (int, float)):
        value = datetime.fromtimestamp(value, timezone.utc)
    return value.isoformat()


def job_error(job: Job) -> str | None:
    """Return the end of a job's traceback (ERROR_CHARS characters), or None if it has none."""
    try:
        result = job.latest_result()
    except Exception:  # noqa: BLE001  (a result from another RQ version must not break the status page)
        result = None
    text = (result.exc_string if result is not None and result.exc_string else None) or job.exc_info
    return text[-defaults.ERROR_CHARS :] if text else None


def read_plan(run: Path) -> list[dict[str, Any]] | None:
    """Return a run's plan ([{key, kind, deps}] in execution order), or None before the plan job wrote it or if unreadable."""
    try:
        plan: list[dict[str, Any]] = json.loads((run / layout.PLAN_FILE).read_text())
        return plan
    except (OSError, ValueError):
        return None


def read_stage(path: Path) -> dict[str, Any] | None:
    """Return a stage file's small fields (scalars, barriers, eigenvalues) and its mtime, cached by mtime; None if absent.

    Cached because the sync task reads every stage of every active study once per tick.
    """
    try:
        mtime = path.stat().st_mtime
    except FileNotFoundError:
        return None
    hit = _stage_cache.get(str(path))
    if hit and hit[0] == mtime:
        return hit[1]
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    metrics = {k: v for k, v in info.items() if isinstance(v, (int, float, str, bool)) or v is None}
    for k in ("barriers", "top_eigenvalues", "points"):
        if k in info:
            metrics[k] = info[k]
    out = {"metrics": metrics, "mtime": mtime, "seconds": info.get("seconds")}
    if len(_stage_cache) > _STAGE_CACHE_SIZE:
        _stage_cache.clear()
    _stage_cache[str(path)] = (mtime, out)
    return out


def study_status(conn: redis.Redis, study_id: str, run_id: str, artifact_root: str | Path) -> dict[str, Any]:
    """Return {"state", "stages": [...], "done", "total", "log_tail", ...} from the plan file, stage files and RQ jobs.

    state: queued | running | finished | failed | cancelled. Each stage: key, kind, deps, status (done | running |
    queued | waiting | failed | stopped | cancelled | pending = no job), step, total, eta_s, metrics, message,
    error, worker, started_at, ended_at, job_id. Extra fields: run_id, plan_job ({id, status, error}),
    missing (unfinished stages with no job in Redis: what reconcile_study would resubmit).
    """
    root = run_dir(artifact_root, run_id)
    study = study_record(conn, study_id)
    cancelled = "cancelled" in study
    pid = keys.plan_job_id(study_id)
    try:
        plan_job: Job | None = Job.fetch(pid, connection=conn, serializer=SERIALIZER)
    except NoSuchJobError:
        plan_job = None
    plan_status = job_status(plan_job)
    plan_info = {
        "id": pid,
        "status": plan_status.value if plan_status else None,
        "error": job_error(plan_job) if plan_job is not None and plan_status == JobStatus.FAILED else None,
    }
    plan = read_plan(root) or []
    ids = [keys.stage_job_id(run_id, s["key"]) for s in plan]
    jobs = Job.fetch_many(ids, connection=conn, serializer=SERIALIZER) if ids else []
    rows = []
    for s, jid, job in zip(plan, ids, jobs, strict=True):
        row: dict[str, Any] = {
            "key": s["key"],
            "kind": s["kind"],
            "deps": s.get("deps", []),
            "job_id": jid,
            "status": "pending",
            "step": None,
            "total": None,
            "eta_s": None,
            "metrics": {},
            "message": "",
            "error": None,
            "worker": None,
            "started_at": None,
            "ended_at": None,
        }
        info = read_stage(layout.stage_file(root, s["key"]))
        status = job_status(job)
        if job is not None:
            row["worker"] = job.worker_name
            row["started_at"], row["ended_at"] = iso_time(job.started_at), iso_time(job.ended_at)
        if info is not None:
            row["status"], row["metrics"] = "done", info["metrics"]
            row["ended_at"] = row["ended_at"] or iso_time(info["mtime"])
            if row["started_at"] is None and info["seconds"] is not None:
                row["started_at"] = iso_time(info["mtime"] - info["seconds"])
        elif status is not None:
            row["status"] = _STAGE_STATUS.get(status, status.value)
            if status == JobStatus.STOPPED and cancelled:
                row["status"] = "cancelled"
            elif status == JobStatus.STOPPED:
                row["error"] = "stopped by a stop command"
            elif status == JobStatus.FAILED and job is not None:
                row["error"] = job_error(job)
        if job is not None and info is None:
            progress = (job.meta or {}).get("progress") or {}
            for k in ("step", "total", "eta_s", "message"):
                if progress.get(k) is not None:
                    row[k] = progress[k]
            row["metrics"] = progress.get("metrics") or {}
        rows.append(row)
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    done, total = counts.get("done", 0), len(rows)
    missing = [r["key"] for r in rows if r["status"] == "pending"]
    if plan and done == total:
        state = "finished"
    elif cancelled:
        state = "cancelled"
    elif plan_status == JobStatus.FAILED:
        state = "failed"
    elif counts.get("running") or plan_status == JobStatus.STARTED:
        state = "running"
    elif plan_status in (JobStatus.QUEUED, JobStatus.DEFERRED, JobStatus.SCHEDULED):  # (re)submitted, not yet planned
        state = "running" if done else "queued"
    elif counts.get("failed") or counts.get("stopped"):
        # Failed once nothing that can still run is left (the stages behind the failure wait forever).
        state = "running" if counts.get("queued") else "failed"
    else:
        state = "running" if done else "queued"
    return {
        "study_id": study_id,
        "run_id": run_id,
        "state": state,
        "stages": rows,
        "done": done,
        "total": total,
        "counts": counts,
        "missing": missing,
        "plan_job": plan_info,
        "log_tail": log_tail(conn, run_id),
    }
