"""Submission: a study becomes one plan job, and the plan job's stages become RQ jobs linked by their dependencies.

One study = one *plan* job (`worker.jobs.plan_study`, id from the study id) which, on a worker, plans the
stages and calls `enqueue_stages` here: one `worker.jobs.run_stage` job per unfinished stage, with RQ
`depends_on` = the jobs of its unfinished dependencies, so independent stages (mask sources, seed pairs,
surfaces, Hessians) run in parallel on several workers. Stage job ids derive from run id + stage key, so
two studies with the same config share (never duplicate) the work, and resubmitting enqueues only what is
neither done nor already waiting.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import redis
from rq import Queue
from rq.exceptions import NoSuchJobError
from rq.job import Dependency, Job, JobStatus

from . import defaults, keys
from .connection import SERIALIZER, get_queue, job_status
from .runlog import append_log

_LIVE = (JobStatus.QUEUED, JobStatus.STARTED, JobStatus.DEFERRED, JobStatus.SCHEDULED)


def submit_study(
    conn: redis.Redis, study_id: str, config: dict[str, Any], artifact_root: str | Path, queue: str = defaults.DEFAULT_QUEUE
) -> str:
    """Enqueue the study's plan job (unless one is already waiting or running) and return its job id.

    The plan job plans the stages on a worker and enqueues the unfinished ones (`enqueue_stages`).
    Resubmitting a cancelled or failed study clears its cancel flag and reruns what is not done.
    """
    jid = keys.plan_job_id(study_id)
    q = get_queue(conn, queue)
    with conn.lock(keys.submit_lock_key(study_id), timeout=defaults.SUBMIT_LOCK_TIMEOUT, blocking_timeout=defaults.SUBMIT_LOCK_TIMEOUT):
        conn.hset(
            keys.study_key(study_id),
            mapping={"queue": queue, "artifact_root": str(artifact_root), "plan_job": jid, "submitted_at": str(time.time())},
        )
        conn.hdel(keys.study_key(study_id), "cancelled")
        try:
            old = Job.fetch(jid, connection=conn, serializer=SERIALIZER)
        except NoSuchJobError:
            old = None
        if old is not None:
            if job_status(old) in _LIVE:
                return jid
            old.delete()
        q.enqueue_call(
            keys.PLAN_FUNC,
            args=(study_id, config, str(artifact_root), queue),
            job_id=jid,
            timeout=defaults.PLAN_TIMEOUT,
            result_ttl=defaults.RESULT_TTL,
            failure_ttl=defaults.FAILURE_TTL,
            description=f"plan study {study_id}",
            meta={"study_id": study_id, "kind": "plan"},
        )
    return jid


def enqueue_stages(
    conn: redis.Redis,
    study_id: str,
    config: dict[str, Any],
    artifact_root: str | Path,
    queue: str,
    run_id: str,
    stages: list[dict[str, Any]],
    done: Iterable[str],
) -> dict[str, Any]:
    """Enqueue one run_stage job per unfinished stage with depends_on = its unfinished dependencies' jobs; return what happened.

    `stages` is the plan in dependency order ([{"key", "kind", "deps"}]); `done` the keys whose stage file exists.
    A stage whose job is queued, running, or waiting on jobs that are themselves kept, is left alone; failed,
    stopped, cancelled or missing jobs (and waiting jobs downstream of them) are recreated. Called by the
    plan job under the run's plan lock, so two studies of one run never race.
    Returns {"run_id", "cancelled", "enqueued": [keys], "kept": [keys], "done": [keys]}.
    """
    done = set(done)
    result: dict[str, Any] = {"run_id": run_id, "cancelled": False, "enqueued": [], "kept": [], "done": sorted(done)}
    with conn.lock(keys.plan_lock_key(run_id), timeout=defaults.PLAN_LOCK_TIMEOUT, blocking_timeout=defaults.PLAN_LOCK_TIMEOUT):
        if conn.hexists(keys.study_key(study_id), "cancelled"):  # cancel_study ran before we took the lock
            result["cancelled"] = True
            return result
        conn.sadd(keys.run_studies_key(run_id), study_id)
        todo = [s for s in stages if s["key"] not in done]
        ids = {s["key"]: keys.stage_job_id(run_id, s["key"]) for s in todo}
        existing = dict(zip(ids, Job.fetch_many(list(ids.values()), connection=conn, serializer=SERIALIZER), strict=True)) if ids else {}
        # A job that finished after the caller looked at the files has written its stage file: count it as done.
        finished = {k for k, job in existing.items() if job_status(job) == JobStatus.FINISHED}
        done |= finished
        todo = [s for s in todo if s["key"] not in finished]
        result["done"] = sorted(done)
        recreate: set[str] = set()
        for s in todo:  # dependency order: a dependency's fate is known before its dependents'
            status = job_status(existing.get(s["key"]))
            # A waiting job is kept only while it still waits on something that will finish and enqueue it.
            keep = status in (JobStatus.QUEUED, JobStatus.STARTED, JobStatus.SCHEDULED) or (
                status == JobStatus.DEFERRED and not any(d in recreate for d in s["deps"]) and any(d not in done for d in s["deps"])
            )
            if keep:
                result["kept"].append(s["key"])
            else:
                recreate.add(s["key"])
        q = get_queue(conn, queue)
        datas = []
        for s in todo:
            key = s["key"]
            if key not in recreate:
                continue
            old = existing.get(key)
            if old is not None:
                old.delete()  # also drops it from the failed / canceled registries
            conn.delete(keys.abandoned_key(ids[key]))
            deps: list[Dependency | Job | str] = [ids[d] for d in s["deps"] if d not in done]
            datas.append(
                Queue.prepare_data(
                    keys.STAGE_FUNC,
                    args=(study_id, config, str(artifact_root), key),
                    job_id=ids[key],
                    depends_on=deps or None,
                    timeout=defaults.JOB_TIMEOUT,
                    result_ttl=defaults.RESULT_TTL,
                    failure_ttl=defaults.FAILURE_TTL,
                    description=f"{s['kind']} {key} (run {run_id})",
                    meta={"study_id": study_id, "run_id": run_id, "stage": key, "kind": s["kind"]},
                )
            )
            result["enqueued"].append(key)
        if datas:
            q.enqueue_many(datas)
        if ids:
            conn.sadd(keys.run_jobs_key(run_id), *ids.values())
    if result["enqueued"]:
        append_log(
            conn,
            run_id,
            f"study {study_id}: enqueued {len(result['enqueued'])} stage(s), {len(result['kept'])} already queued, {len(done)} done",
        )
    return result
