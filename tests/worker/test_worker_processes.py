"""Real `lmc worker` processes (db 10): a worker SIGKILLed mid-stage, and a running stage cancelled."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys

import pytest
from rq import Queue
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus

from lmc_core.foundations import layout
from tests.helpers.worker import ROOT, assert_same_results, pid_alive, stage_mtimes, tiny_config, wait_for
from worker import SERIALIZER, cancel_study, live_workers, run_dir, stage_job_id, study_status, submit_study

REDIS_DB = 10
pytestmark = [pytest.mark.slow, pytest.mark.timeout(300, method="thread")]


def _run_id(config) -> str:
    from lmc_core.studies.validation import load_config

    return load_config(config).run_id()


def _running_with_progress(conn, job_id: str):
    """Return the job once it is running and has reported a training step, else None."""

    def check():
        try:
            job = Job.fetch(job_id, connection=conn, serializer=SERIALIZER)
        except NoSuchJobError:
            return None
        progress = job.get_meta(refresh=True).get("progress") or {}
        return job if job.get_status() == JobStatus.STARTED and (progress.get("step") or 0) >= 1 and "pid" in job.meta else None

    return check


def test_sigkilled_worker_is_replaced_and_nothing_finished_is_recomputed(conn, workers, tmp_path, reference):
    config = tiny_config(epochs=40)  # a copy pair trains for a few seconds: long enough to be caught running on a quiet machine
    run_id = _run_id(config)
    root = str(tmp_path / "artifacts")
    rd = run_dir(root, run_id)
    submit_study(conn, "s1", config, root)
    w1 = workers.start("w1")
    target = stage_job_id(run_id, "copies/imp-k0-r1/k0/p0")
    job = wait_for(_running_with_progress(conn, target), 120, "the IMP copies stage to report progress")
    horse = job.meta["pid"]
    workers.extra_pids.add(horse)

    # The machine dies: freeze worker and horse (so neither reacts nor finishes the stage), then SIGKILL both.
    os.kill(w1.pid, signal.SIGSTOP)
    os.kill(horse, signal.SIGSTOP)
    assert not layout.stage_file(rd, "copies/imp-k0-r1/k0/p0").exists()
    os.kill(horse, signal.SIGKILL)
    w1.kill()
    w1.wait(timeout=30)
    wait_for(lambda: not pid_alive(horse), 30, "the work horse to be gone")
    before = stage_mtimes(rd)
    assert {"init", "copies/dense/k0/p0", "mask/imp-k0-r1"} <= set(before)
    assert Job.fetch(target, connection=conn, serializer=SERIALIZER).get_status() == JobStatus.STARTED  # RQ does not know yet

    # Two new workers: one requeues the dead worker's job at start; together they run it and everything after it.
    w2, w3 = workers.start("w2", "--burst"), workers.start("w3", "--burst")
    assert w2.wait(timeout=240) == 0, workers.log("w2")
    assert w3.wait(timeout=240) == 0, workers.log("w3")
    assert "abandoned by dead workers" in workers.log("w2") + workers.log("w3")
    status = study_status(conn, "s1", run_id, root)
    assert status["state"] == "finished", status
    assert Job.fetch(target, connection=conn, serializer=SERIALIZER).meta["requeued"]["count"] == 1
    after = stage_mtimes(rd)
    assert {k: after[k] for k in before} == before  # finished stages were not recomputed
    assert_same_results(rd, reference(config))
    for stage in status["stages"]:  # across workers too, no stage started before its dependencies ended
        job = Job.fetch(stage["job_id"], connection=conn, serializer=SERIALIZER)
        for dep in stage["deps"]:
            dep_job = Job.fetch(stage_job_id(run_id, dep), connection=conn, serializer=SERIALIZER)
            assert job.started_at >= dep_job.ended_at, (stage["key"], dep)


def test_an_orphaned_work_horse_exits_when_its_worker_dies(tmp_path):
    """RQ's horse has its own process group, so killing only the worker would leave it running; watch_parent ends it."""
    code = (
        "import os, sys, threading, time\n"
        "from worker.runner import watch_parent\n"
        "parent = os.getpid()\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    threading.Thread(target=watch_parent, args=(threading.Event(), parent), daemon=True).start()\n"
        "    time.sleep(120)\n"
        "    os._exit(3)\n"
        "print(pid, flush=True)\n"
        "time.sleep(120)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        child = int(parent.stdout.readline())
        assert pid_alive(child)
        parent.kill()
        parent.wait(timeout=30)
        wait_for(lambda: not pid_alive(child), 30, "the orphaned child to exit")
    finally:
        parent.kill()
        with contextlib.suppress(ProcessLookupError, UnboundLocalError):
            os.kill(child, signal.SIGKILL)


def test_cancel_stops_the_running_stage_and_nothing_else_runs(conn, workers, tmp_path):
    config = tiny_config(epochs=40)  # long enough to be caught running on a quiet machine
    run_id = _run_id(config)
    root = str(tmp_path)
    submit_study(conn, "s1", config, root)
    workers.start("w1", "--gpu", "7")
    target = stage_job_id(run_id, "copies/dense/k0/p0")
    job = wait_for(_running_with_progress(conn, target), 120, "the dense copies stage to report progress")
    workers.extra_pids.add(job.meta["pid"])
    (w,) = live_workers(conn)
    assert w["name"] == "w1" and w["gpu"] == "7" and w["current_job"] == target and w["stage"] == "copies/dense/k0/p0"

    assert cancel_study(conn, "s1") == 13  # the running stage plus the 12 waiting behind it
    wait_for(lambda: Job.fetch(target, connection=conn, serializer=SERIALIZER).get_status() == JobStatus.STOPPED, 60, "the stage to stop")
    wait_for(lambda: [w for w in live_workers(conn) if w["state"] == "idle"], 60, "the worker to go idle")
    q = Queue("lmc", connection=conn, serializer=SERIALIZER)
    assert q.count == 0 and q.deferred_job_registry.count == 0  # nothing left that could run
    assert set(stage_mtimes(run_dir(root, run_id))) == {"init"}
    status = study_status(conn, "s1", run_id, root)
    assert status["state"] == "cancelled"
    assert {s["status"] for s in status["stages"]} == {"done", "cancelled"}
