"""The study queue: turns a study into RQ jobs, reports their state, cancels them, and recovers from dead workers.

This module never imports torch (nor lmc_core.studies.run): the API process imports it, so job functions are
named by dotted path and everything it reports comes from Redis and the JSON files of the artifact root.

One study = one *plan* job (`worker.jobs.plan_study`, id from the study id) which, on a worker, plans the
stages and calls `enqueue_stages` here: one `worker.jobs.run_stage` job per unfinished stage, with RQ
`depends_on` = the jobs of its unfinished dependencies, so independent stages (mask sources, seed pairs,
surfaces, Hessians) run in parallel on several workers. Stage job ids derive from run id + stage key, so
two studies with the same config share (never duplicate) the work, and resubmitting enqueues only what is
neither done nor already waiting.

Redis state besides RQ's: `lmc:study:<id>` (run id, queue, artifact root, cancel flag), `lmc:run:<run>:studies`
(the active studies sharing a run), `lmc:run:<run>:jobs` (its stage job ids), `lmc:log:<run>` (log tail).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

import redis
from rq import Queue, worker_registration
from rq.command import send_stop_job_command
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job, JobStatus
from rq.job_lifecycle import record_job_failure
from rq.serializers import JSONSerializer
from rq.utils import parse_composite_key, utcparse
from rq.worker import Worker

from . import defaults
from .defaults import DEFAULT_QUEUE, FAILURE_TTL, JOB_TIMEOUT, PLAN_TIMEOUT, RESULT_TTL

__all__ = [
    "DEFAULT_QUEUE", "JOB_TIMEOUT", "RESULT_TTL", "SERIALIZER", "PLAN_FUNC", "STAGE_FUNC",
    "connect", "plan_job_id", "stage_job_id", "run_dir", "submit_study", "enqueue_stages", "study_status",
    "cancel_study", "requeue_abandoned", "reconcile_study", "live_workers", "workers_per_queue", "queue_summary", "worker_alive", "reap_dead_workers", "append_log",
]

# JSON, not pickle: job payloads are plain config dicts, and unpickling what sits in Redis would run code.
SERIALIZER = JSONSerializer
PLAN_FUNC = "worker.jobs.plan_study"
STAGE_FUNC = "worker.jobs.run_stage"
_JOB_FUNCS = (PLAN_FUNC, STAGE_FUNC)

_LIVE = (JobStatus.QUEUED, JobStatus.STARTED, JobStatus.DEFERRED, JobStatus.SCHEDULED)
_STAGE_STATUS = {
    JobStatus.QUEUED: "queued", JobStatus.SCHEDULED: "queued", JobStatus.DEFERRED: "waiting",
    JobStatus.STARTED: "running", JobStatus.FAILED: "failed", JobStatus.STOPPED: "stopped",
    JobStatus.CANCELED: "cancelled", JobStatus.FINISHED: "pending",  # finished without stage.json: rerun on resubmit
}
_ABANDONED = "AbandonedJobError"
_SAFE = re.compile(r"[^A-Za-z0-9_-]+")


# ---- connection and ids ---------------------------------------------------------------------------
def connect(url: str | None = None) -> redis.Redis:
    """Return a Redis client for `url` (default LMC_REDIS_URL) whose blocking reads never time out."""
    # redis-py 8 defaults to a 5 s socket timeout, which breaks RQ's blocking dequeue and result waits.
    return redis.Redis.from_url(url or os.environ.get("LMC_REDIS_URL") or defaults.REDIS_URL, socket_timeout=None)


def _safe(text: str, limit: int) -> str:
    """Return `text` in RQ's job-id alphabet (letters, digits, _ and -), with a hash so distinct texts stay distinct."""
    cleaned = _SAFE.sub("_", text).strip("_")[:limit]
    if cleaned == text:
        return text
    return f"{cleaned}-{hashlib.sha1(text.encode()).hexdigest()[:10]}"


def plan_job_id(study_id: str) -> str:
    """Return the RQ job id of a study's plan job."""
    return f"lmc-plan-{_safe(study_id, 64)}"


def stage_job_id(run_id: str, stage_key: str) -> str:
    """Return the RQ job id of one stage of a run: readable, valid for RQ 3, and the same for every study of that run."""
    return f"lmc-{_safe(run_id, 32)}-{_safe(stage_key, 80)}"


def run_dir(artifact_root: str | Path, run_id: str) -> Path:
    """Return the lmc_core run directory of `run_id` under the artifact root."""
    return Path(artifact_root) / "runs" / run_id


def _queue(conn: redis.Redis, name: str) -> Queue:
    return Queue(name, connection=conn, serializer=SERIALIZER, default_timeout=JOB_TIMEOUT)


def _text(value: Any) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


def _study(conn: redis.Redis, study_id: str) -> dict[str, str]:
    return {_text(k): _text(v) for k, v in conn.hgetall(defaults.study_key(study_id)).items()}


def _status(job: Job | None) -> JobStatus | None:
    if job is None:
        return None
    try:
        return job.get_status(refresh=False)
    except InvalidJobOperation:
        return None


def append_log(conn: redis.Redis, run_id: str, line: str) -> None:
    """Append a timestamped line to a run's bounded log tail."""
    stamp = time.strftime("%H:%M:%S")
    with conn.pipeline() as pipe:
        pipe.rpush(defaults.log_key(run_id), f"{stamp} {line}")
        pipe.ltrim(defaults.log_key(run_id), -defaults.LOG_TAIL, -1)
        pipe.expire(defaults.log_key(run_id), FAILURE_TTL)
        pipe.execute()


# ---- submission -----------------------------------------------------------------------------------
def submit_study(conn: redis.Redis, study_id: str, config: dict[str, Any], artifact_root: str,
                 queue: str = DEFAULT_QUEUE) -> str:
    """Enqueue the study's plan job (unless one is already waiting or running) and return its job id.

    The plan job plans the stages on a worker and enqueues the unfinished ones (`enqueue_stages`).
    Resubmitting a cancelled or failed study clears its cancel flag and reruns what is not done.
    """
    jid = plan_job_id(study_id)
    q = _queue(conn, queue)
    with conn.lock(f"{defaults.KEY_PREFIX}:submit:{study_id}", timeout=30, blocking_timeout=30):
        conn.hset(defaults.study_key(study_id), mapping={"queue": queue, "artifact_root": str(artifact_root),
                                                          "plan_job": jid, "submitted_at": str(time.time())})
        conn.hdel(defaults.study_key(study_id), "cancelled")
        try:
            old = Job.fetch(jid, connection=conn, serializer=SERIALIZER)
        except NoSuchJobError:
            old = None
        if old is not None:
            if _status(old) in _LIVE:
                return jid
            old.delete()
        q.enqueue_call(PLAN_FUNC, args=(study_id, config, str(artifact_root), queue), job_id=jid, timeout=PLAN_TIMEOUT,
                       result_ttl=RESULT_TTL, failure_ttl=FAILURE_TTL, description=f"plan study {study_id}",
                       meta={"study_id": study_id, "kind": "plan"})
    return jid


def enqueue_stages(conn: redis.Redis, study_id: str, config: dict[str, Any], artifact_root: str, queue: str,
                   run_id: str, stages: list[dict[str, Any]], done: Iterable[str]) -> dict[str, Any]:
    """Enqueue one run_stage job per unfinished stage with depends_on = its unfinished dependencies' jobs; return what happened.

    `stages` is the plan in dependency order ([{"key", "kind", "deps"}]); `done` the keys whose stage.json exists.
    A stage whose job is queued, running, or waiting on jobs that are themselves kept, is left alone; failed,
    stopped, cancelled or missing jobs (and waiting jobs downstream of them) are recreated. Called by the
    plan job under the run's plan lock, so two studies of one run never race.
    Returns {"run_id", "cancelled", "enqueued": [keys], "kept": [keys], "done": [keys]}.
    """
    done = set(done)
    result: dict[str, Any] = {"run_id": run_id, "cancelled": False, "enqueued": [], "kept": [], "done": sorted(done)}
    with conn.lock(defaults.plan_lock_key(run_id), timeout=defaults.PLAN_LOCK_TIMEOUT, blocking_timeout=defaults.PLAN_LOCK_TIMEOUT):
        if conn.hexists(defaults.study_key(study_id), "cancelled"):  # cancel_study ran before we took the lock
            result["cancelled"] = True
            return result
        conn.sadd(defaults.run_studies_key(run_id), study_id)
        todo = [s for s in stages if s["key"] not in done]
        ids = {s["key"]: stage_job_id(run_id, s["key"]) for s in todo}
        existing = dict(zip(ids, Job.fetch_many(list(ids.values()), connection=conn, serializer=SERIALIZER))) if ids else {}
        # A job that finished after the caller looked at the files has written its stage.json: count it as done.
        finished = {k for k, job in existing.items() if _status(job) == JobStatus.FINISHED}
        done |= finished
        todo = [s for s in todo if s["key"] not in finished]
        result["done"] = sorted(done)
        recreate: set[str] = set()
        for s in todo:  # dependency order: a dependency's fate is known before its dependents'
            status = _status(existing.get(s["key"]))
            # A waiting job is kept only while it still waits on something that will finish and enqueue it.
            keep = status in (JobStatus.QUEUED, JobStatus.STARTED, JobStatus.SCHEDULED) or (
                status == JobStatus.DEFERRED and not any(d in recreate for d in s["deps"])
                and any(d not in done for d in s["deps"]))
            if keep:
                result["kept"].append(s["key"])
            else:
                recreate.add(s["key"])
        q = _queue(conn, queue)
        datas = []
        for s in todo:
            key = s["key"]
            if key not in recreate:
                continue
            old = existing.get(key)
            if old is not None:
                old.delete()  # also drops it from the failed / canceled registries
            conn.delete(defaults.abandoned_key(ids[key]))
            deps = [ids[d] for d in s["deps"] if d not in done]
            datas.append(Queue.prepare_data(
                STAGE_FUNC, args=(study_id, config, str(artifact_root), key), job_id=ids[key], depends_on=deps or None,
                timeout=JOB_TIMEOUT, result_ttl=RESULT_TTL, failure_ttl=FAILURE_TTL,
                description=f"{s['kind']} {key} (run {run_id})",
                meta={"study_id": study_id, "run_id": run_id, "stage": key, "kind": s["kind"]}))
            result["enqueued"].append(key)
        if datas:
            q.enqueue_many(datas)
        if ids:
            conn.sadd(defaults.run_jobs_key(run_id), *ids.values())
    if result["enqueued"]:
        append_log(conn, run_id, f"study {study_id}: enqueued {len(result['enqueued'])} stage(s), "
                                 f"{len(result['kept'])} already queued, {len(done)} done")
    return result


# ---- status ---------------------------------------------------------------------------------------
_info_cache: dict[str, tuple[float, dict[str, Any]]] = {}


def _stage_file(root: Path, key: str) -> Path:
    return root / "stages" / key / "stage.json"


def _compact_info(path: Path) -> dict[str, Any] | None:
    """Return stage.json's small fields (scalars, barriers, eigenvalues) and its mtime, cached by mtime; None if absent."""
    try:
        mtime = path.stat().st_mtime
    except FileNotFoundError:
        return None
    hit = _info_cache.get(str(path))
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
    if len(_info_cache) > 4096:
        _info_cache.clear()
    _info_cache[str(path)] = (mtime, out)
    return out


def _iso(value: datetime | float | None) -> str | None:
    if value is None:
        return None
    if isinstance(value, (int, float)):
        value = datetime.fromtimestamp(value, timezone.utc)
    return value.isoformat()


def _error(job: Job) -> str | None:
    try:
        result = job.latest_result()
    except Exception:  # a result from another RQ version must not break the status page
        result = None
    text = (result.exc_string if result is not None and result.exc_string else None) or job.exc_info
    return text[-defaults.ERROR_CHARS:] if text else None


def _read_plan(root: Path) -> list[dict[str, Any]] | None:
    try:
        return json.loads((root / "stages.json").read_text())
    except (OSError, ValueError):
        return None


def study_status(conn: redis.Redis, study_id: str, run_id: str, artifact_root: str) -> dict[str, Any]:
    """Return {"state", "stages": [...], "done", "total", "log_tail", ...} from stages.json, stage.json files and RQ jobs.

    state: queued | running | finished | failed | cancelled. Each stage: key, kind, deps, status (done | running |
    queued | waiting | failed | stopped | cancelled | pending = no job), step, total, eta_s, metrics, message,
    error, worker, started_at, ended_at, job_id. Extra fields: run_id, plan_job ({id, status, error}),
    missing (unfinished stages with no job in Redis: what reconcile_study would resubmit).
    """
    root = run_dir(artifact_root, run_id)
    study = _study(conn, study_id)
    cancelled = "cancelled" in study
    pid = plan_job_id(study_id)
    try:
        plan_job: Job | None = Job.fetch(pid, connection=conn, serializer=SERIALIZER)
    except NoSuchJobError:
        plan_job = None
    plan_status = _status(plan_job)
    plan_info = {"id": pid, "status": plan_status.value if plan_status else None,
                 "error": _error(plan_job) if plan_job is not None and plan_status == JobStatus.FAILED else None}
    plan = _read_plan(root) or []
    ids = [stage_job_id(run_id, s["key"]) for s in plan]
    jobs = Job.fetch_many(ids, connection=conn, serializer=SERIALIZER) if ids else []
    rows = []
    for s, jid, job in zip(plan, ids, jobs):
        row: dict[str, Any] = {"key": s["key"], "kind": s["kind"], "deps": s.get("deps", []), "job_id": jid, "status": "pending",
                               "step": None, "total": None, "eta_s": None, "metrics": {}, "message": "", "error": None,
                               "worker": None, "started_at": None, "ended_at": None}
        info = _compact_info(_stage_file(root, s["key"]))
        status = _status(job)
        if job is not None:
            row["worker"] = job.worker_name
            row["started_at"], row["ended_at"] = _iso(job.started_at), _iso(job.ended_at)
        if info is not None:
            row["status"], row["metrics"] = "done", info["metrics"]
            row["ended_at"] = row["ended_at"] or _iso(info["mtime"])
            if row["started_at"] is None and info["seconds"] is not None:
                row["started_at"] = _iso(info["mtime"] - info["seconds"])
        elif status is not None:
            row["status"] = _STAGE_STATUS.get(status, status.value)
            if status == JobStatus.STOPPED and cancelled:
                row["status"] = "cancelled"
            elif status == JobStatus.STOPPED:
                row["error"] = "stopped by a stop command"
            elif status == JobStatus.FAILED:
                row["error"] = _error(job)
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
    tail = [_text(x) for x in conn.lrange(defaults.log_key(run_id), -defaults.LOG_TAIL, -1)]
    return {"study_id": study_id, "run_id": run_id, "state": state, "stages": rows, "done": done, "total": total,
            "counts": counts, "missing": missing, "plan_job": plan_info, "log_tail": tail}


# ---- cancellation ---------------------------------------------------------------------------------
def _cancel_jobs(conn: redis.Redis, job_ids: list[str]) -> int:
    """Cancel the queued and waiting jobs, then stop the running ones; return how many were cancelled or stopped."""
    touched: set[str] = set()
    for _ in range(3):  # a job may start, or enqueue a dependent, between our read and our write: sweep again
        jobs = [j for j in Job.fetch_many(job_ids, connection=conn, serializer=SERIALIZER) if j is not None]
        waiting = [j for j in jobs if _status(j) in (JobStatus.QUEUED, JobStatus.DEFERRED, JobStatus.SCHEDULED)]
        running = [j for j in jobs if _status(j) == JobStatus.STARTED]
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
        for job in Job.fetch_many([j.id for j in waiting], connection=conn, serializer=SERIALIZER) if waiting else []:
            if job is not None and job.started_at is not None:
                running.append(job)
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
    key = defaults.study_key(study_id)
    conn.hset(key, "cancelled", str(time.time()))  # first, so a plan job that has not yet enqueued sees it
    n = _cancel_jobs(conn, [plan_job_id(study_id)])
    run_id = _text(conn.hget(key, "run_id"))
    if not run_id:
        return n
    with conn.lock(defaults.plan_lock_key(run_id), timeout=defaults.PLAN_LOCK_TIMEOUT, blocking_timeout=defaults.PLAN_LOCK_TIMEOUT):
        conn.srem(defaults.run_studies_key(run_id), study_id)
        if conn.scard(defaults.run_studies_key(run_id)):
            return n
        ids = sorted(_text(x) for x in conn.smembers(defaults.run_jobs_key(run_id)))
        n += _cancel_jobs(conn, ids)
    append_log(conn, run_id, f"study {study_id}: cancelled ({n} job(s))")
    return n


# ---- dead workers ---------------------------------------------------------------------------------
def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed but unreaped process is a zombie: gone for our purposes
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def worker_alive(conn: redis.Redis, name: str | None, since: datetime | None = None) -> bool:
    """Return whether RQ worker `name` is alive (and, with `since`, has been alive since then).

    Dead: its Redis key is gone or marked dead; it was born after `since` (restarted under the same name);
    it ran on this host and its process is gone; or its heartbeat is older than WORKER_DEAD_AFTER seconds.
    """
    if not name:
        return False
    data = {_text(k): _text(v) for k, v in conn.hgetall(Worker.redis_worker_namespace_prefix + name).items()}
    if not data or "death" in data or "birth" not in data:
        return False
    if since is not None and utcparse(data["birth"]) > since:
        return False
    if data.get("hostname") == socket.gethostname() and data.get("pid") and not _pid_alive(int(data["pid"])):
        return False
    if data.get("last_heartbeat"):
        server_now = conn.time()[0]
        if server_now - utcparse(data["last_heartbeat"]).timestamp() > defaults.WORKER_DEAD_AFTER:
            return False
    return True


def _requeue(conn: redis.Redis, job: Job, why: str) -> bool:
    """Requeue an abandoned job (dependents stay attached, so they are enqueued when it finishes); False if capped."""
    count = conn.incr(defaults.abandoned_key(job.id))
    conn.expire(defaults.abandoned_key(job.id), FAILURE_TTL)
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

    The stage resumes cleanly: Run.execute removes an interrupted stage's leftovers and stage.json is written
    last, so finished stages are never recomputed. A job abandoned more than MAX_ABANDONED_REQUEUES times stays failed.
    """
    names = list(queues) if queues is not None else [q.name for q in Queue.all(connection=conn, serializer=SERIALIZER)]
    requeued: list[str] = []
    for name in names:
        q = _queue(conn, name)
        by_job: dict[str, list[str]] = {}
        for entry in conn.zrange(q.started_job_registry.key, 0, -1):
            entry = _text(entry)
            job_id = parse_composite_key(entry)[0] if ":" in entry else entry
            by_job.setdefault(job_id, []).append(entry)
        for job_id, entries in by_job.items():
            try:
                job = Job.fetch(job_id, connection=conn, serializer=SERIALIZER)
            except NoSuchJobError:
                conn.zrem(q.started_job_registry.key, *entries)
                continue
            if job.func_name not in _JOB_FUNCS or _status(job) != JobStatus.STARTED:
                continue
            if worker_alive(conn, job.worker_name, job.started_at):
                continue
            why = f"worker {job.worker_name} died while running it"
            failed = _fail_abandoned(conn, q, job_id, entries, why)
            if failed is not None and _requeue(conn, failed, why):
                requeued.append(job_id)
        # RQ's own maintenance may have got there first and failed the job as abandoned. Failed-registry scores are
        # failure time + failure_ttl, the same for all our jobs, so a cursor lets each failure be examined about once.
        cursor_key = f"{defaults.KEY_PREFIX}:failed-scan:{name}"
        cursor = float(conn.get(cursor_key) or 0)
        entries = conn.zrangebyscore(q.failed_job_registry.key, cursor, "+inf", withscores=True)
        failed_ids = [_text(member) for member, _ in entries]
        if entries:
            conn.set(cursor_key, max(score for _, score in entries))
        for job in Job.fetch_many(failed_ids, connection=conn, serializer=SERIALIZER) if failed_ids else []:
            if job is None or job.func_name not in _JOB_FUNCS or _status(job) != JobStatus.FAILED:
                continue
            if _ABANDONED in (_error(job) or "") and _requeue(conn, job, "worker died (found by RQ maintenance)"):
                requeued.append(job.id)
    for job_id in requeued:
        try:
            job = Job.fetch(job_id, connection=conn, serializer=SERIALIZER)
            if job.meta.get("run_id"):
                append_log(conn, job.meta["run_id"], f"{job.meta.get('stage', job_id)}: requeued, {job.meta['requeued']['why']}")
        except NoSuchJobError:
            pass
    return requeued


def reap_dead_workers(conn: redis.Redis) -> list[str]:
    """Forget RQ workers whose process is certainly gone (this host, pid dead); return their names."""
    gone = []
    for w in Worker.all(connection=conn, serializer=SERIALIZER):
        if w.hostname == socket.gethostname() and w.pid and not _pid_alive(int(w.pid)):
            with conn.pipeline() as pipe:
                pipe.delete(w.key, f"{defaults.KEY_PREFIX}:worker:{w.name}")
                worker_registration.unregister(w, pipe)
                pipe.execute()
            gone.append(w.name)
    return gone


def live_workers(conn: redis.Redis) -> list[dict[str, Any]]:
    """Return one dict per live worker: name, queues, state, current job (and its stage), gpu, pid, hostname, last heartbeat."""
    out = []
    for w in Worker.all(connection=conn, serializer=SERIALIZER):
        if not worker_alive(conn, w.name):
            continue
        extra = {_text(k): _text(v) for k, v in conn.hgetall(f"{defaults.KEY_PREFIX}:worker:{w.name}").items()}
        job_id = w.get_current_job_id()
        stage = None
        if job_id:
            try:
                stage = Job.fetch(job_id, connection=conn, serializer=SERIALIZER).meta.get("stage")
            except NoSuchJobError:
                pass
        out.append({"name": w.name, "queues": w.queue_names(), "state": w.get_state(), "current_job": job_id, "stage": stage,
                    "gpu": extra.get("gpu") or None, "threads": extra.get("threads") or None, "pid": w.pid,
                    "hostname": w.hostname, "birth": _iso(w.birth_date), "last_heartbeat": _iso(w.last_heartbeat),
                    "successful_jobs": w.successful_job_count, "failed_jobs": w.failed_job_count})
    return sorted(out, key=lambda d: d["name"])


def workers_per_queue(conn: redis.Redis) -> dict[str, int]:
    """Return {queue name: number of live workers listening on it} (a worker on several queues counts for each)."""
    counts: dict[str, int] = {}
    for w in Worker.all(connection=conn, serializer=SERIALIZER):
        if worker_alive(conn, w.name):
            for name in w.queue_names():
                counts[name] = counts.get(name, 0) + 1
    return counts


def queue_summary(conn: redis.Redis, names: Iterable[str]) -> list[dict[str, Any]]:
    """Return one dict per queue in `names`: name, workers (live worker names), busy (how many run a job now), queued (jobs waiting to start)."""
    workers = live_workers(conn)
    out = []
    for name in names:
        mine = [w for w in workers if name in w["queues"]]
        out.append({"name": name, "workers": [w["name"] for w in mine], "busy": sum(1 for w in mine if w["current_job"]),
                    "queued": _queue(conn, name).count})
    return out


# ---- recovery -------------------------------------------------------------------------------------
def reconcile_study(conn: redis.Redis, study_id: str, config: dict[str, Any], run_id: str, artifact_root: str,
                    queue: str = DEFAULT_QUEUE) -> str | None:
    """Resubmit a study that lost its jobs (e.g. Redis restarted empty) and return the new plan job id, or None if nothing was lost.

    Call it for studies the store believes queued or running: a study that is finished, cancelled, has a plan job
    waiting or running, or whose every unfinished stage still has a job (even a failed one) is left alone.
    """
    study = _study(conn, study_id)
    if "cancelled" in study:
        return None
    status = study_status(conn, study_id, run_id, artifact_root)
    if status["state"] == "finished":
        return None
    if status["plan_job"]["status"] in ("queued", "started", "deferred", "scheduled"):
        return None
    if not status["stages"]:  # no stages.json yet: only a plan job that vanished needs redoing
        return submit_study(conn, study_id, config, artifact_root, queue) if status["plan_job"]["status"] is None else None
    if not status["missing"]:
        return None
    return submit_study(conn, study_id, config, artifact_root, queue)
