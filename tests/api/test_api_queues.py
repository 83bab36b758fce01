"""Queue choice: a study names its RQ queue, the plan and stage jobs run there, reconciliation keeps it, GET /api/queues lists them."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from rq.job import Job

from app.api.settings import Settings
from tests.helpers.api import burst, worker_config
from worker import SERIALIZER, plan_job_id, stage_job_id

pytestmark = pytest.mark.timeout(300, method="thread")  # RQ arms SIGALRM in this process while a forked job runs


def _queued(rconn, queue: str) -> list[str]:
    return [x.decode() for x in rconn.lrange(f"rq:queue:{queue}", 0, -1)]


def _plan(rconn, study_id: str) -> Job:
    return Job.fetch(plan_job_id(study_id), connection=rconn, serializer=SERIALIZER)


def test_settings_list_the_allowed_queues_and_refuse_odd_names(monkeypatch):
    monkeypatch.setenv("LMC_QUEUE", "cpu")
    monkeypatch.setenv("LMC_QUEUES", "gpu-big,gpu.small")  # from the environment: a plain comma-separated list, not JSON
    assert Settings().allowed_queues == ["cpu", "gpu-big", "gpu.small"]
    monkeypatch.delenv("LMC_QUEUE")
    monkeypatch.delenv("LMC_QUEUES")
    assert Settings(queue="lmc", queues="gpu, lmc,cpu,gpu").allowed_queues == ["lmc", "gpu", "cpu"]
    assert Settings().allowed_queues == ["lmc"]
    with pytest.raises(ValidationError, match="queue name"):
        Settings(queues="gpu,two words")
    with pytest.raises(ValidationError, match="queue name"):
        Settings(queue="-lmc")


def test_a_study_is_queued_where_it_says_and_bad_names_are_refused(make_app, rconn):
    api = make_app(queues="gpu,cpu")
    default = api.create({"preset": "smoke"})
    gpu = api.create({"preset": "smoke", "overrides": {"seed": 1}, "queue": "gpu"})
    assert default["queue"] == "lmc" and gpu["queue"] == "gpu"
    assert api.get(f"/api/studies/{gpu['id']}").json()["queue"] == "gpu"
    assert _queued(rconn, "gpu") == [plan_job_id(gpu["id"])] and _queued(rconn, "lmc") == [plan_job_id(default["id"])]
    # The plan job carries its queue: it is where its stage jobs will be enqueued.
    assert _plan(rconn, gpu["id"]).origin == "gpu" and _plan(rconn, gpu["id"]).args[3] == "gpu"

    r = api.post("/api/studies", {"preset": "smoke", "overrides": {"seed": 2}, "queue": "gpu-big"})
    assert r.status_code == 422 and [e["loc"] for e in r.json()["detail"]] == ["queue"]
    assert "lmc, gpu, cpu" in r.json()["message"] and "LMC_QUEUES" in r.json()["message"]
    assert api.post("/api/studies", {"preset": "smoke", "queue": ""}).status_code == 422
    assert api.get("/api/studies").json()["count"] == 2  # nothing recorded for the refused ones

    # A clone stays on its source's queue unless told otherwise.
    same = api.post(f"/api/studies/{gpu['id']}/clone", {"overrides": {"seed": 3}}).json()
    moved = api.post(f"/api/studies/{gpu['id']}/clone", {"overrides": {"seed": 4}, "queue": "cpu"}).json()
    assert (same["queue"], moved["queue"]) == ("gpu", "cpu")
    assert api.post(f"/api/studies/{gpu['id']}/clone", {"queue": "nope"}).status_code == 422
    assert {s["id"] for s in api.get("/api/studies?queue=gpu").json()["data"]} == {gpu["id"], same["id"]}


def test_stage_jobs_run_on_the_studys_queue_and_reconciliation_keeps_it(make_app, rconn, backend):
    api = make_app(queues="gpu")
    study = api.create({"config": worker_config(seed=11 if backend == "sqlite" else 12), "queue": "gpu"})
    burst(("lmc",))  # a worker on the default queue finds nothing to do
    assert _plan(rconn, study["id"]).get_status().value == "queued"
    burst(("gpu",), max_jobs=1)  # the plan job only
    init = Job.fetch(stage_job_id(study["run_id"], "init"), connection=rconn, serializer=SERIALIZER)
    assert init.origin == "gpu" and init.id in _queued(rconn, "gpu") and _queued(rconn, "lmc") == []

    rconn.flushdb()  # Redis restarted empty: the next start of the service resubmits the study, on its own queue
    other = make_app()  # this server no longer even lists gpu: what was recorded still goes where it was meant to
    assert other.get(f"/api/studies/{study['id']}").json()["queue"] == "gpu"
    assert _queued(rconn, "gpu") == [plan_job_id(study["id"])] and _queued(rconn, "lmc") == []


def test_queues_endpoint_lists_workers_and_waiting_jobs(make_app, rconn):
    from worker.runner import make_worker

    api = make_app(queues="gpu")
    api.create({"preset": "smoke", "queue": "gpu"})
    probe = make_worker(rconn, ["gpu", "lmc"], name="probe")
    probe.register_birth()
    try:
        rows = api.get("/api/queues").json()
    finally:
        probe.register_death()
    assert rows == [
        {"name": "lmc", "default": True, "workers": ["probe"], "busy": 0, "queued": 0},
        {"name": "gpu", "default": False, "workers": ["probe"], "busy": 0, "queued": 1},
    ]
    assert api.get("/api/queues").json()[1]["workers"] == []  # dead workers are not offered

    down = make_app(redis_url="redis://127.0.0.1:1/0", queues="gpu")
    assert down.get("/api/queues").json() == [
        {"name": "lmc", "default": True, "workers": None, "busy": None, "queued": None},
        {"name": "gpu", "default": False, "workers": None, "busy": None, "queued": None},
    ]
