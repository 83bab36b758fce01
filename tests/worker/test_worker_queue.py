"""The worker package and worker.jobs against a real Redis (db 9), with forking workers run in this process."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from rq import Queue
from rq.job import Job, JobStatus

from lmc_core.foundations import layout
from tests.helpers.worker import ROOT, assert_same_results, burst, stage_mtimes, tiny_config
from worker import (
    SERIALIZER,
    cancel_study,
    enqueue_stages,
    live_workers,
    plan_job_id,
    reconcile_study,
    requeue_abandoned,
    run_dir,
    stage_job_id,
    study_status,
    submit_study,
)
from worker.keys import worker_info_key

REDIS_DB = 9
# RQ arms SIGALRM in this process while a forked job runs; pytest-timeout must not rely on the same signal.
pytestmark = pytest.mark.timeout(300, method="thread")


def _run_id(config) -> str:
    from lmc_core.studies.validation import load_config

    return load_config(config).run_id()


def _jobs(conn, run_id: str, root) -> dict[str, Job | None]:
    plan = json.loads((run_dir(root, run_id) / layout.PLAN_FILE).read_text())
    ids = [stage_job_id(run_id, s["key"]) for s in plan]
    return {s["key"]: j for s, j in zip(plan, Job.fetch_many(ids, connection=conn, serializer=SERIALIZER), strict=True)}


def test_import_leaves_torch_out():
    # `worker` itself imports every module the API uses; runner and commands are imported by `lmc worker` before torch.
    code = (
        "import sys, worker, worker.runner, worker.commands; "
        "print(sorted(m for m in ('torch', 'lmc_core.studies.run') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_job_ids_are_valid_for_rq_and_distinct():
    from rq.job import validate_job_id

    keys = ["init", "copies/imp-k0-r1/k0/p0", "copies_imp-k0-r1_k0_p0", "synthetic/my_set", "synthetic-eval/my_set", "experts/ab12"]
    ids = [stage_job_id("0123456789ab", k) for k in keys]
    for jid in [*ids, plan_job_id("f" * 32), plan_job_id("odd id:with/slashes")]:
        validate_job_id(jid)
    assert len(set(ids)) == len(ids)
    assert stage_job_id("0123456789ab", "init") == stage_job_id("0123456789ab", "init")


def test_study_runs_to_the_same_results_as_a_direct_run(conn, tmp_path, reference):
    config = tiny_config()
    root = tmp_path / "artifacts"
    jid = submit_study(conn, "s1", config, str(root))
    assert jid == plan_job_id("s1")
    status = study_status(conn, "s1", _run_id(config), str(root))
    assert status["state"] == "queued" and status["stages"] == []

    burst(conn)

    run_id = _run_id(config)
    status = study_status(conn, "s1", run_id, str(root))
    assert status["state"] == "finished"
    assert status["done"] == status["total"] == 14
    assert all(s["status"] == "done" and s["worker"] and s["started_at"] and s["ended_at"] for s in status["stages"])
    assert any("done in" in line for line in status["log_tail"])

    # Results are those of an uninterrupted run of the same config elsewhere, bit for bit.
    want = reference(config)
    got = run_dir(root, run_id)
    assert_same_results(got, want)
    from lmc_core.studies.run import Run
    from lmc_core.studies.validation import load_config

    direct = Run(load_config(config), want.parent)
    summary = json.loads((got / layout.SUMMARY_FILE).read_text())
    assert summary["table"] == json.loads(json.dumps(direct.table()))
    assert summary["analysis"] == json.loads(json.dumps(direct.analysis_table()))
    assert summary["stages"] == {s.key: s.kind for s in direct.stages}
    assert json.loads((got / layout.PLAN_FILE).read_text()) == [{"key": s.key, "kind": s.kind, "deps": list(s.deps)} for s in direct.stages]

    # No stage job started before every job it depends on had ended.
    jobs = _jobs(conn, run_id, root)
    for s in direct.stages:
        for dep in s.deps:
            assert jobs[s.key].started_at >= jobs[dep].ended_at, (s.key, dep)
        assert jobs[s.key].get_status() == JobStatus.FINISHED

    # Resubmitting a finished study enqueues no stage: the plan job reports nothing to do and nothing is recomputed.
    before = stage_mtimes(got)
    jid = submit_study(conn, "s1", config, str(root))
    burst(conn)
    report = Job.fetch(jid, connection=conn, serializer=SERIALIZER).return_value()
    assert report["enqueued"] == [] and len(report["done"]) == 14
    assert stage_mtimes(got) == before
    assert reconcile_study(conn, "s1", config, run_id, str(root)) is None


def test_dependencies_defer_jobs_and_independent_stages_are_queued_together(conn, tmp_path):
    config = tiny_config()
    root = str(tmp_path)
    submit_study(conn, "s1", config, root)
    burst(conn, max_jobs=1)  # the plan job only
    run_id = _run_id(config)
    jobs = _jobs(conn, run_id, root)
    plan = json.loads((run_dir(root, run_id) / layout.PLAN_FILE).read_text())
    assert {k for k, j in jobs.items() if j.get_status() == JobStatus.QUEUED} == {"init"}
    assert all(j.get_status() == JobStatus.DEFERRED for k, j in jobs.items() if k != "init")
    for s in plan:  # RQ holds exactly the plan's edges
        assert sorted(jobs[s["key"]].dependency_ids) == sorted(stage_job_id(run_id, d) for d in s["deps"])

    # Step one job at a time: a job is queued only once its dependencies are done, and at some point
    # independent stages (the IMP subnetwork's copies and the random mask) wait side by side for workers.
    q = Queue("lmc", connection=conn, serializer=SERIALIZER)
    most_queued = 0
    while q.count:
        done = {s["key"] for s in plan if layout.stage_file(run_dir(root, run_id), s["key"]).exists()}
        queued = {jobs[k].id for k in jobs} & set(q.job_ids)
        for s in plan:
            if stage_job_id(run_id, s["key"]) in queued:
                assert set(s["deps"]) <= done, s["key"]
        most_queued = max(most_queued, len(queued))
        burst(conn, max_jobs=1)
    assert most_queued >= 2
    assert study_status(conn, "s1", run_id, root)["state"] == "finished"


def test_submitting_twice_does_not_duplicate_jobs(conn, tmp_path):
    config = tiny_config()
    root = str(tmp_path)
    q = Queue("lmc", connection=conn, serializer=SERIALIZER)
    assert submit_study(conn, "s1", config, root) == submit_study(conn, "s1", config, root)
    assert q.count == 1
    burst(conn, max_jobs=1)
    run_id = _run_id(config)
    n_jobs = q.count + q.deferred_job_registry.count
    assert n_jobs == 14

    # A second plan of the same run (another study with the same config, or a resubmission) keeps every job.
    plan = json.loads((run_dir(root, run_id) / layout.PLAN_FILE).read_text())
    report = enqueue_stages(conn, "s2", config, root, "lmc", run_id, plan, done=[])
    assert report["enqueued"] == [] and len(report["kept"]) == 14
    submit_study(conn, "s1", config, root)
    burst(conn, max_jobs=1)  # init runs first (it was queued first), then the new plan job
    burst(conn, max_jobs=1)
    assert q.count + q.deferred_job_registry.count == 13  # init done; nothing duplicated
    assert q.job_ids.count(stage_job_id(run_id, "copies/dense/k0/p0")) == 1


def test_cancel_stops_queued_and_waiting_jobs(conn, tmp_path):
    config = tiny_config()
    root = str(tmp_path)
    submit_study(conn, "s1", config, root)
    burst(conn, max_jobs=3)  # plan, init, dense copies
    run_id = _run_id(config)
    done_before = set(stage_mtimes(run_dir(root, run_id)))
    assert done_before == {"init", "copies/dense/k0/p0"}

    assert cancel_study(conn, "s1") == 12
    burst(conn)
    assert set(stage_mtimes(run_dir(root, run_id))) == done_before  # nothing else ran
    status = study_status(conn, "s1", run_id, root)
    assert status["state"] == "cancelled"
    assert {s["status"] for s in status["stages"] if s["key"] not in done_before} == {"cancelled"}
    assert all(j.get_status() == JobStatus.CANCELED for k, j in _jobs(conn, run_id, root).items() if k not in done_before)
    assert reconcile_study(conn, "s1", config, run_id, root) is None

    # Submitting again resumes where the study stopped.
    submit_study(conn, "s1", config, root)
    burst(conn)
    assert study_status(conn, "s1", run_id, root)["state"] == "finished"


def test_cancel_before_the_plan_job_runs(conn, tmp_path):
    config = tiny_config()
    submit_study(conn, "s1", config, str(tmp_path))
    assert cancel_study(conn, "s1") == 1
    burst(conn)
    assert not (tmp_path / layout.RUNS_DIR).exists()
    assert study_status(conn, "s1", _run_id(config), str(tmp_path))["state"] == "cancelled"


def test_shared_run_survives_cancelling_one_of_its_studies(conn, tmp_path):
    config = tiny_config()
    root = str(tmp_path)
    submit_study(conn, "a", config, root)
    submit_study(conn, "b", config, root)
    burst(conn, max_jobs=2)  # both plan jobs
    assert cancel_study(conn, "a") == 0  # study b still needs every stage
    burst(conn)
    run_id = _run_id(config)
    assert study_status(conn, "a", run_id, root)["state"] == "finished"  # the results exist, whoever asked
    assert study_status(conn, "b", run_id, root)["state"] == "finished"


def test_empty_redis_mid_study_is_reconciled_without_losing_work(conn, tmp_path, reference):
    config = tiny_config()
    root = str(tmp_path)
    run_id = _run_id(config)
    submit_study(conn, "s1", config, root)
    assert reconcile_study(conn, "s1", config, run_id, root) is None  # its plan job is waiting
    burst(conn, max_jobs=6)
    assert reconcile_study(conn, "s1", config, run_id, root) is None  # every unfinished stage has its job
    before = stage_mtimes(run_dir(root, run_id))
    assert len(before) == 5

    conn.flushdb()  # Redis restarted with an empty database
    status = study_status(conn, "s1", run_id, root)
    assert status["done"] == 5 and len(status["missing"]) == 9
    jid = reconcile_study(conn, "s1", config, run_id, root)
    assert jid == plan_job_id("s1")
    burst(conn)

    assert study_status(conn, "s1", run_id, root)["state"] == "finished"
    after = stage_mtimes(run_dir(root, run_id))
    assert {k: after[k] for k in before} == before  # nothing finished was recomputed
    assert_same_results(run_dir(root, run_id), reference(config))


def test_failed_stage_keeps_its_error_and_earlier_stages(conn, tmp_path, monkeypatch):
    from dataclasses import replace

    from lmc_core.studies.stages import masks

    original = masks.MASK

    def broken(run, stage, out, callback):
        if stage.params["source"] == "random":
            raise RuntimeError("random masks are broken today")
        return original.run(run, stage, out, callback)

    # The stage-kind registry looks the kind up on every call, so patching the module reaches Run.execute.
    monkeypatch.setattr(masks, "MASK", replace(original, run=broken))  # forked jobs inherit the patch
    config = tiny_config()
    root = str(tmp_path)
    run_id = _run_id(config)
    submit_study(conn, "s1", config, root)
    burst(conn)

    status = study_status(conn, "s1", run_id, root)
    assert status["state"] == "failed"
    by_key = {s["key"]: s for s in status["stages"]}
    failed = by_key["mask/random-k0-r1"]
    assert failed["status"] == "failed" and "random masks are broken today" in failed["error"]
    # The mask distances compare every source's round-1 mask, random's included: they wait too.
    downstream = [k for k in by_key if ("random" in k or k.startswith("distances/")) and k != "mask/random-k0-r1"]
    assert "distances/k0/r1" in downstream and all(by_key[k]["status"] == "waiting" for k in downstream)
    assert all(s["status"] == "done" for k, s in by_key.items() if k not in downstream and k != "mask/random-k0-r1")
    assert any("failed: RuntimeError" in line for line in status["log_tail"])
    assert not list(run_dir(root, run_id).glob(f"{layout.STAGES_DIR}/*random*/**/{layout.STAGE_FILE}"))

    # Fixed and resubmitted: the failed stage and its dependents run; the rest is not recomputed.
    monkeypatch.setattr(masks, "MASK", original)
    before = stage_mtimes(run_dir(root, run_id))
    submit_study(conn, "s1", config, root)
    burst(conn)
    assert study_status(conn, "s1", run_id, root)["state"] == "finished"
    after = stage_mtimes(run_dir(root, run_id))
    assert {k: after[k] for k in before} == before


def test_requeue_abandoned_moves_a_dead_workers_job_back_to_the_queue(conn, tmp_path):
    """Simulated here (the real SIGKILL is in test_worker_processes): a started job whose worker never existed is requeued once."""
    config = tiny_config()
    root = str(tmp_path)
    submit_study(conn, "s1", config, root)
    burst(conn, max_jobs=1)
    run_id = _run_id(config)
    q = Queue("lmc", connection=conn, serializer=SERIALIZER)
    job = Job.fetch(stage_job_id(run_id, "init"), connection=conn, serializer=SERIALIZER)
    with conn.pipeline() as pipe:  # what a worker does when it starts a job, then it "dies"
        q.remove(job, pipeline=pipe)
        job.prepare_for_execution("ghost-worker", pipe)
        pipe.zadd(q.started_job_registry.key, {f"{job.id}:exec1": 9e12})
        pipe.execute()
    assert requeue_abandoned(conn) == [job.id]
    job = Job.fetch(job.id, connection=conn, serializer=SERIALIZER)
    assert job.get_status() == JobStatus.QUEUED and job.meta["requeued"]["count"] == 1
    assert q.started_job_registry.count == 0 and q.job_ids == [job.id]
    assert requeue_abandoned(conn) == []

    # Same death, but RQ's own registry cleanup notices first and fails the job as abandoned: still requeued.
    with conn.pipeline() as pipe:
        q.remove(job, pipeline=pipe)
        job.prepare_for_execution("ghost-worker-2", pipe)
        pipe.zadd(q.started_job_registry.key, {f"{job.id}:exec2": 1})  # its heartbeat entry expired long ago
        pipe.execute()
    q.started_job_registry.cleanup()
    assert job.get_status() == JobStatus.FAILED and job.id in q.failed_job_registry
    assert requeue_abandoned(conn) == [job.id]
    assert job.get_status() == JobStatus.QUEUED and job.get_meta()["requeued"]["count"] == 2
    burst(conn)
    assert study_status(conn, "s1", run_id, root)["state"] == "finished"


def test_invalid_config_fails_the_plan_job_with_its_message(conn, tmp_path):
    config = tiny_config()
    config["train"]["lr"] = -1
    submit_study(conn, "s1", config, str(tmp_path))
    burst(conn)
    status = study_status(conn, "s1", "unknown", str(tmp_path))
    assert status["state"] == "failed" and "train.lr" in status["plan_job"]["error"]


def test_live_workers_lists_running_workers_only(conn):
    from worker.runner import make_worker

    w = make_worker(conn, ["lmc"], name="probe", gpu="3")
    w.register_birth()
    try:
        rows = {r["name"]: r for r in live_workers(conn)}
        assert rows["probe"]["gpu"] == "3" and rows["probe"]["queues"] == ["lmc"]
    finally:
        w.register_death()
    assert "probe" not in {r["name"] for r in live_workers(conn)}
    assert not conn.exists(worker_info_key("probe"))
