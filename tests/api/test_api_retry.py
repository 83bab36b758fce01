"""Retry: a failed or cancelled study runs again in place (same run directory), reusing every finished stage; 409 otherwise."""

from __future__ import annotations

import pytest
from rq.job import Job

from tests.helpers.api import burst, stage_mtimes, worker_config
from worker import SERIALIZER, plan_job_id

pytestmark = pytest.mark.timeout(300, method="thread")  # RQ arms SIGALRM in this process while a forked job runs


def test_retry_after_a_failure_recomputes_only_the_unfinished_stages(api, rconn, artifact_root, backend, monkeypatch):
    from dataclasses import replace

    from lmc_core.studies.stages import masks

    original = masks.MASK

    def broken(run, stage, out, callback):
        if stage.params["source"] == "random":
            raise RuntimeError("random masks are broken today")
        return original.run(run, stage, out, callback)

    # The stage-kind registry looks the kind up on every call, so patching the module reaches Run.execute.
    monkeypatch.setattr(masks, "MASK", replace(original, run=broken))  # the forked jobs of the in-process worker inherit the patch
    study = api.create({"config": worker_config(seed=21 if backend == "sqlite" else 22)})
    sid, run = study["id"], artifact_root / "runs" / study["run_id"]
    burst()
    api.sync()
    failed = api.get(f"/api/studies/{sid}").json()
    assert failed["status"] == "failed" and "random masks are broken today" in failed["error"]
    assert [j["key"] for j in api.get(f"/api/studies/{sid}/progress").json()["failed"]] == ["mask/random-k0-r1"]
    before = stage_mtimes(run)
    done_before = {k.rsplit("/", 1)[0] for k in before}
    assert done_before and not any("random" in k for k in done_before) and len(done_before) < 14

    monkeypatch.setattr(masks, "MASK", original)  # fixed
    r = api.post(f"/api/studies/{sid}/retry")
    assert r.status_code == 200, r.text
    again = r.json()
    assert (again["id"], again["run_id"], again["status"], again["error"], again["submitted"]) == (
        sid,
        study["run_id"],
        "queued",
        None,
        True,
    )
    assert api.get(f"/api/studies/{sid}/progress").json()["failed"] == []  # the failed stage waits to run again
    burst()
    api.sync()

    finished = api.get(f"/api/studies/{sid}").json()
    assert finished["status"] == "finished" and finished["stages_done"] == finished["stages_total"] == 14
    after = stage_mtimes(run)
    assert {k: after[k] for k in before} == before  # not one file of a finished stage was rewritten
    rerun = {k.rsplit("/", 1)[0] for k in after} - done_before
    assert rerun == {
        f"{kind}/random-k0-r1" + ("" if kind == "mask" else "/k0/p0") for kind in ("mask", "copies", "path", "surface", "hessian")
    } | {"distances/k0/r1"}  # the mask distances need random's mask too
    report = Job.fetch(plan_job_id(sid), connection=rconn, serializer=SERIALIZER).return_value()
    assert set(report["done"]) == done_before and set(report["enqueued"]) == rerun

    r = api.post(f"/api/studies/{sid}/retry")
    assert r.status_code == 409 and "finished" in r.json()["detail"] and "clone" in r.json()["detail"]


def test_retry_of_a_cancelled_study_requeues_it_and_refuses_active_ones(make_app, rconn):
    api = make_app(queues="gpu")
    study = api.create({"preset": "smoke"})
    sid = study["id"]
    r = api.post(f"/api/studies/{sid}/retry")
    assert r.status_code == 409 and "queued" in r.json()["detail"] and "cancel it first" in r.json()["detail"]
    assert api.post(f"/api/studies/{sid}/cancel").status_code == 200
    assert rconn.hexists(f"lmc:study:{sid}", "cancelled")
    assert api.post(f"/api/studies/{sid}/retry", role="viewer").status_code == 403
    assert api.post(f"/api/studies/{sid}/retry", {"queue": "nope"}).status_code == 422
    assert api.post("/api/studies/nope/retry").status_code == 404

    r = api.post(f"/api/studies/{sid}/retry", {"queue": "gpu"})  # e.g. to the machines with bigger GPUs
    assert r.status_code == 200 and (r.json()["status"], r.json()["queue"], r.json()["finished_at"]) == ("queued", "gpu", None)
    assert not rconn.hexists(f"lmc:study:{sid}", "cancelled")
    plan = Job.fetch(plan_job_id(sid), connection=rconn, serializer=SERIALIZER)
    assert plan.get_status().value == "queued" and plan.origin == "gpu"
    api.sync()
    assert api.get(f"/api/studies/{sid}").json()["status"] == "queued"  # the mirror agrees: not cancelled any more
    assert api.post(f"/api/studies/{sid}/retry").status_code == 409


def test_retry_counts_against_the_owners_active_studies(make_app):
    api = make_app(max_jobs_per_user=1)
    first = api.create({"preset": "smoke"})
    api.post(f"/api/studies/{first['id']}/cancel")
    api.create({"preset": "smoke", "overrides": {"seed": 1}})
    r = api.post(f"/api/studies/{first['id']}/retry")
    assert r.status_code == 429 and "LMC_MAX_JOBS_PER_USER" in r.json()["detail"]
    assert api.get(f"/api/studies/{first['id']}").json()["status"] == "cancelled"  # unchanged


def test_retry_while_redis_is_down_is_recorded_and_submitted_later(make_app, rconn):
    down = make_app(redis_url="redis://127.0.0.1:1/0")
    sid = down.post("/api/studies", {"preset": "smoke"}).json()["study_id"]  # 503, recorded
    assert down.post(f"/api/studies/{sid}/cancel").status_code == 200
    r = down.post(f"/api/studies/{sid}/retry")
    assert r.status_code == 503 and r.json()["study_id"] == sid
    assert (down.get(f"/api/studies/{sid}").json()["status"], down.get(f"/api/studies/{sid}").json()["submitted"]) == ("queued", False)
    make_app()  # Redis answers the next service: its start-up reconciliation submits the retried study
    assert Job.fetch(plan_job_id(sid), connection=rconn, serializer=SERIALIZER).get_status().value == "queued"
