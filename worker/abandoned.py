"""Jobs abandoned by dead workers go back on their queue, with their dependents still attached, a bounded number of times.

The stage resumes cleanly: Run.execute removes an interrupted stage's leftovers and the stage file is written
last, so finished stages are never recomputed.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import cast

import redis
from rq import Queue
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from rq.job_lifecycle import record_job_failure
from rq.utils import parse_composite_key

from . import defaults, keys
from .connection import SERIALIZER, decode, get_queue, job_status
from .liveness import worker_alive
from .runlog import append_log
from .status import job_error

# The exception name RQ's own cleanup records for a job whose worker vanished; we record the same.
_ABANDONED = "AbandonedJobError"


def _requeue(conn: redis.Redis, job: Job, why: str) -> bool:
    """Requeue an abandoned job (dependents stay attached, so they are enqueued when it finishes); False if capped."""
    count = conn.incr(keys.abandoned_key(job.id))
    conn.expire(keys.abandoned_key(job.id), defaults.FAILURE_TTL)
    if count > defaults.MAX_ABANDONED_REQUEUES:
        return False
    # Drop the dead run's progress so status pages do not show it as current.
    job.meta.pop("progress", None)
    job.meta["requeued"] = {"count": count, "why": why, "at": time.time()}
    job.save_meta()
    job.failed_job_registry.requeue(job)
    return True


def _fail_abandoned(conn: redis.Redis, queue: Queue, job_id: str, entries: list[str], why: str) -> Job | None:
    """Move a started job whose worker died to the failed registry, as RQ's own cleanup does; None if it moved on."""
    registry = queue.started_job_registry
    with conn.pipeline() as pipe:
        try:
            pipe.watch(Job.key_for(job_id))
            job = Job.fetch(job_id, connection=conn, serializer=SERIALIZER)
            if job.get_status(refresh=True) != JobStatus.STARTED:
                pipe.reset()
                return None
            pipe.multi()
            pipe.zrem(registry.key, *entries)
            record_job_failure(job, f"{_ABANDONED}: {why}", pipe)
            pipe.execute()
            return job
        except (redis.WatchError, NoSuchJobError):
            return None


def requeue_abandoned(conn: redis.Redis, queues: Iterable[str] | None = None) -> list[str]:
    """Requeue lmc jobs whose worker died mid-job (started, or failed by RQ's cleanup as abandoned); return their ids.

    A job abandoned more than MAX_ABANDONED_REQUEUES times stays failed.
    """
    names = list(queues) if queues is not None else [q.name for q in Queue.all(connection=conn, serializer=SERIALIZER)]
    requeued: list[str] = []
    for name in names:
        q = get_queue(conn, name)
        by_job: dict[str, list[str]] = {}
        for raw in cast("list[bytes]", conn.zrange(q.started_job_registry.key, 0, -1)):
            entry = decode(raw)
            job_id = parse_composite_key(entry)[0] if ":" in entry else entry
            by_job.setdefault(job_id, []).append(entry)
        for job_id, entries in by_job.items():
            try:
                job = Job.fetch(job_id, connection=conn, serializer=SERIALIZER)
            except NoSuchJobError:
                conn.zrem(q.started_job_registry.key, *entries)
                continue
            if job.func_name not in keys.JOB_FUNCS or job_status(job) != JobStatus.STARTED:
                continue
            if worker_alive(conn, job.worker_name, job.started_at):
                continue
            why = f"worker {job.worker_name} died while running it"
            failed = _fail_abandoned(conn, q, job_id, entries, why)
            if failed is not None and _requeue(conn, failed, why):
                requeued.append(job_id)
        # RQ's own maintenance may have got there first and failed the job as abandoned. Failed-registry scores are
        # failure time + failure_ttl, the same for all our jobs, so a cursor lets each failure be examined about once.
        cursor_key = keys.failed_scan_key(name)
        cursor = float(conn.get(cursor_key) or 0)
        scored = cast("list[tuple[bytes, float]]", conn.zrangebyscore(q.failed_job_registry.key, cursor, "+inf", withscores=True))
        failed_ids = [decode(member) for member, _ in scored]
        if scored:
            conn.set(cursor_key, max(score for _, score in scored))
        for failed_job in Job.fetch_many(failed_ids, connection=conn, serializer=SERIALIZER) if failed_ids else []:
            if failed_job is None or failed_job.func_name not in keys.JOB_FUNCS or job_status(failed_job) != JobStatus.FAILED:
                continue
            if _ABANDONED in (job_error(failed_job) or "") and _requeue(conn, failed_job, "worker died (found by RQ maintenance)"):
                requeued.append(failed_job.id)
    for job_id in requeued:
        try:
            job = Job.fetch(job_id, connection=conn, serializer=SERIALIZER)
            if job.meta.get("run_id"):
                append_log(conn, job.meta["run_id"], f"{job.meta.get('stage', job_id)}: requeued, {job.meta['requeued']['why']}")
        except NoSuchJobError:
            pass
    return requeued
