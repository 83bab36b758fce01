"""Cancellation: a study's waiting jobs are cancelled and its running ones stopped, unless another study shares them."""

from __future__ import annotations

import time

import redis
from rq.command import send_stop_job_command
from rq.exceptions import InvalidJobOperation
from rq.job import Job, JobStatus

from . import defaults, keys
from .connection import SERIALIZER, decode, job_status
from .runlog import append_log


def _cancel_jobs(conn: redis.Redis, job_ids: list[str]) -> int:
    """Cancel the queued and waiting jobs, then stop the running ones; return how many were cancelled or stopped."""
    touched: set[str] = set()
    for _ in range(3):  # a job may start, or enqueue a dependent, between our read and our write: sweep again
        jobs = [j for j in Job.fetch_many(job_ids, connection=conn, serializer=SERIALIZER) if j is not None]
        waiting = [j for j in jobs if job_status(j) in (JobStatus.QUEUED, JobStatus.DEFERRED, JobStatus.SCHEDULED)]
        running = [j for j in jobs if job_status(j) == JobStatus.STARTED]
        if not waiting and not running:
            break
        # Waiting jobs first, so a stage that finishes while we work finds its dependents already cancelled.
        for job in waiting:
            try:
                job.cancel(remove_from_dependencies=True)
                touched.add(job.id)
            except InvalidJobOperation:
                pass
        # One of them may have been dequeued between our read and its cancel: it runs regardless, so stop it too.
        for fetched in Job.fetch_many([j.id for j in waiting], connection=conn, serializer=SERIALIZER) if waiting else []:
            if fetched is not None and fetched.started_at is not None:
                running.append(fetched)
        for job in running:
            try:
                send_stop_job_command(conn, job.id, serializer=SERIALIZER)
                touched.add(job.id)
            except InvalidJobOperation:  # finished (or was never picked up) in the meantime
                pass
        if not waiting:
            break
    return len(touched)


def cancel_study(conn: redis.Redis, study_id: str) -> int:
    """Cancel the study's queued and waiting jobs and stop its running ones; return how many jobs were cancelled or stopped.

    Stage jobs shared with another active study of the same config keep running for that study.
    """
    key = keys.study_key(study_id)
    conn.hset(key, "cancelled", str(time.time()))  # first, so a plan job that has not yet enqueued sees it
    n = _cancel_jobs(conn, [keys.plan_job_id(study_id)])
    raw = conn.hget(key, "run_id")
    run_id = decode(raw) if raw is not None else None
    if not run_id:
        return n
    with conn.lock(keys.plan_lock_key(run_id), timeout=defaults.PLAN_LOCK_TIMEOUT, blocking_timeout=defaults.PLAN_LOCK_TIMEOUT):
        conn.srem(keys.run_studies_key(run_id), study_id)
        if conn.scard(keys.run_studies_key(run_id)):
            return n
        ids = sorted(decode(x) for x in conn.smembers(keys.run_jobs_key(run_id)))
        n += _cancel_jobs(conn, ids)
    append_log(conn, run_id, f"study {study_id}: cancelled ({n} job(s))")
    return n
