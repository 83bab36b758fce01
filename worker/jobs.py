"""The job functions RQ workers run: plan a study, run one stage. They import torch (through lmc_core's run store).

Referenced only by dotted path (`worker.keys.PLAN_FUNC`, `worker.keys.STAGE_FUNC`), so the API never imports
this module. Both are idempotent: planning skips finished stages and jobs already waiting, and a stage whose
stage file exists is not run again, so a job may be requeued after its worker died without harm.
"""

from __future__ import annotations

import fcntl
import math
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis
from rq import get_current_job
from rq.job import Job
from rq.worker import Worker

from lmc_core.foundations import layout
from lmc_core.foundations.events import Event
from lmc_core.foundations.storage import save_json
from lmc_core.studies.plan import Stage
from lmc_core.studies.run import Run
from lmc_core.studies.validation import load_config

from . import defaults, keys
from .connection import connect
from .defaults import DEFAULT_QUEUE
from .runlog import append_log
from .runner import watch_parent
from .runs import runs_dir
from .submit import enqueue_stages


def _connection(job: Job | None) -> redis.Redis:
    """Return the Redis connection of the running job, or a fresh one when called outside a worker."""
    return job.connection if job is not None else connect()


def _run(config: dict[str, Any], artifact_root: str) -> Run:
    """Return the lmc_core Run of `config` under the artifact root this worker sees."""
    # A worker may see the shared artifact mount at another path than the API that enqueued the job.
    root = os.environ.get("LMC_ARTIFACT_ROOT") or artifact_root
    return Run(load_config(config), root=runs_dir(root))


def plan_study(study_id: str, config: dict[str, Any], artifact_root: str, queue: str = DEFAULT_QUEUE) -> dict[str, Any]:
    """Plan the study, write its config, manifest and plan files, enqueue its unfinished stages; return enqueue_stages' report."""
    job = get_current_job()
    conn = _connection(job)
    run = _run(config, artifact_root)
    # run_id is recorded before the plan lock is taken: cancel_study relies on this order (see enqueue_stages).
    conn.hset(keys.study_key(study_id), "run_id", run.id)
    run.write_manifest()
    stages = [{"key": s.key, "kind": s.kind, "deps": list(s.deps)} for s in run.stages]
    save_json(run.dir / layout.PLAN_FILE, stages)
    done = [s.key for s in run.stages if run.is_done(s.key)]
    report = enqueue_stages(conn, study_id, config, artifact_root, queue, run.id, stages, done)
    if len(done) == len(stages) or not (run.dir / layout.SUMMARY_FILE).exists():
        refresh_summary(conn, run)
    return report


def refresh_summary(conn: redis.Redis, run: Run) -> None:
    """Rewrite the run's summary file (study table, analysis table, synthetic table, stage kinds) under the run's Redis lock."""
    # Each writer reads the stage files inside the lock, so the last write has seen every stage finished before it.
    with conn.lock(keys.summary_lock_key(run.id), timeout=defaults.SUMMARY_LOCK_TIMEOUT, blocking_timeout=defaults.SUMMARY_LOCK_TIMEOUT):
        summary = {
            "table": run.table(),
            "analysis": run.analysis_table(),
            "synthetic": run.synthetic_table(),
            "stages": {s.key: s.kind for s in run.stages},
            "done": [s.key for s in run.stages if run.is_done(s.key)],
            "updated": time.time(),
        }
        save_json(run.dir / layout.SUMMARY_FILE, summary)


def _refresh_summary_safely(conn: redis.Redis, run: Run, stage_key: str) -> None:
    """Refresh the run's summary file, logging rather than raising a failure."""
    # The summary is derived from the stage files and rewritten after every stage: failing the job here would
    # mark a finished stage failed and strand its dependents, so a failed refresh is only logged.
    try:
        refresh_summary(conn, run)
    except Exception as e:  # noqa: BLE001
        append_log(conn, run.id, f"{stage_key}: {layout.SUMMARY_FILE} not refreshed: {type(e).__name__}: {e}")


def _number(v: Any) -> float | int | str | None:
    """Return a JSON-safe scalar: NaN and infinities become None (the API serves strict JSON)."""
    if isinstance(v, (bool, int, str)) or v is None:
        return v
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    return f if math.isfinite(f) else None


class Progress:
    """The Event callback of a stage: writes job.meta["progress"] at most once per PROGRESS_INTERVAL_S and feeds the log tail."""

    def __init__(self, job: Job | None, conn: redis.Redis, run_id: str, stage: str) -> None:
        self.job, self.conn, self.run_id, self.stage = job, conn, run_id, stage
        self.last_write = self.last_log = -math.inf
        self.phase: tuple[str, int] | None = None
        self.phase_start = time.monotonic()
        self.phase_step = 0

    def __call__(self, event: Event) -> None:
        """Record one progress event: the log tail gets every message, job.meta the latest progress with its ETA."""
        now = time.monotonic()
        phase = (event.stage, event.total)
        if phase != self.phase or event.step < self.phase_step:  # a new loop inside the stage: restart the ETA clock
            self.phase, self.phase_start, self.phase_step = phase, now, event.step
        eta = None
        if event.total and event.step > self.phase_step:
            rate = (now - self.phase_start) / (event.step - self.phase_step)
            eta = rate * max(event.total - event.step, 0)
        metrics = {k: _number(v) for k, v in (event.metrics or {}).items()}
        progress = {
            "stage": self.stage,
            "event_stage": event.stage,
            "step": event.step,
            "total": event.total,
            "eta_s": eta,
            "metrics": metrics,
            "message": event.message,
            "updated": time.time(),
        }
        if event.message:
            append_log(self.conn, self.run_id, f"{self.stage}: {event.message}")
        if now - self.last_write < defaults.PROGRESS_INTERVAL_S:
            return
        self.last_write = now
        if self.job is not None:
            self.job.meta["progress"] = progress
            self.job.save_meta()
        if now - self.last_log >= defaults.LOG_INTERVAL_S:
            self.last_log = now
            shown = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in list(metrics.items())[:4])
            append_log(self.conn, self.run_id, f"{self.stage}: {event.stage} {event.step}/{event.total} {shown}".rstrip())


@contextmanager
def _stage_lock(run: Run, key: str) -> Iterator[None]:
    """Hold an exclusive file lock on one stage of one run (released by the kernel if the process dies).

    Guards against two executions of a stage at once, which Run.execute cannot survive (each removes the
    other's half-written folder): e.g. a job requeued while an orphaned work horse still finishes it, or a
    stage resubmitted after Redis lost its jobs while the old one still runs.
    """
    locks = run.dir / ".locks"
    locks.mkdir(parents=True, exist_ok=True)
    path = locks / (key.replace("/", "__") + ".lock")
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _worker_pid(conn: redis.Redis, job: Job | None) -> int | None:
    """Return the pid of the worker running `job`, as it registered in Redis (None outside a worker)."""
    if job is None or not job.worker_name:
        return None
    pid = conn.hget(Worker.redis_worker_namespace_prefix + job.worker_name, "pid")
    return int(pid) if pid else None


def run_stage(study_id: str, config: dict[str, Any], artifact_root: str, stage_key: str) -> dict[str, Any]:
    """Run one stage of the study unless its stage file exists, refresh the summary; return {key, kind, skipped, seconds}."""
    job = get_current_job()
    conn = _connection(job)
    run = _run(config, artifact_root)
    stages = {s.key: s for s in run.stages}
    if stage_key not in stages:
        raise ValueError(f"stage {stage_key!r} is not in the plan of run {run.id}; resubmit the study to re-plan it")
    stage: Stage = stages[stage_key]
    stop = threading.Event()
    worker_pid = _worker_pid(conn, job)
    if worker_pid is not None and worker_pid != os.getpid():  # a forked work horse (not a SimpleWorker, not a direct call)
        threading.Thread(target=watch_parent, args=(stop, worker_pid), daemon=True, name="lmc-parent-watch").start()
    try:
        with _stage_lock(run, stage_key):
            if run.is_done(stage_key):
                _refresh_summary_safely(conn, run, stage_key)
                return {"key": stage_key, "kind": stage.kind, "skipped": True, "seconds": run.stage_info(stage_key).get("seconds")}
            if job is not None:
                job.meta["pid"] = os.getpid()
                job.meta["progress"] = {
                    "stage": stage_key,
                    "step": 0,
                    "total": None,
                    "eta_s": None,
                    "metrics": {},
                    "message": "starting",
                    "updated": time.time(),
                }
                job.save_meta()
            append_log(conn, run.id, f"{stage_key}: started ({stage.kind})")
            try:
                info = run.execute(stage, Progress(job, conn, run.id, stage_key))
            except Exception as e:
                append_log(conn, run.id, f"{stage_key}: failed: {type(e).__name__}: {e}")
                raise
        append_log(conn, run.id, f"{stage_key}: done in {info['seconds']:.1f} s")
        _refresh_summary_safely(conn, run, stage_key)
        return {"key": stage_key, "kind": stage.kind, "skipped": False, "seconds": info["seconds"]}
    finally:
        stop.set()
