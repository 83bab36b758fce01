"""The study ETA: median finished-stage duration x stages left / live workers on the study's queue; null without a basis."""

from __future__ import annotations

import pytest

from app.api.models import Study
from app.api.progress import estimate_eta


def _stage(key: str, status: str, seconds: float | None = None, **extra) -> dict:
    metrics = {"seconds": seconds} if seconds is not None else {}
    return {
        "key": key,
        "kind": key.split("/")[0],
        "status": status,
        "metrics": metrics,
        "step": None,
        "total": None,
        "eta_s": None,
        "started_at": None,
        "ended_at": None,
        **extra,
    }


STAGES = [
    _stage("init", "done", 10.0),
    _stage("copies/a", "done", 20.0),
    _stage("copies/b", "done", 30.0),
    _stage("path/a", "done", 1000.0),
    _stage("copies/c", "running", step=50, total=100),
    _stage("path/b", "queued"),
    _stage("path/c", "waiting"),
    _stage("mask/x", "failed"),
    _stage("copies/x", "cancelled"),  # will not run again without a retry: no time
]


def test_eta_is_the_median_stage_time_per_worker_over_what_is_left():
    # median 25 s; left: half of the running stage + 2 whole ones = 2.5 stages
    assert estimate_eta(STAGES, workers=1) == pytest.approx(25 * 2.5)
    assert estimate_eta(STAGES, workers=2) == pytest.approx(25 * 2.5 / 2)
    assert estimate_eta(STAGES, workers=8) == pytest.approx(25 * 2.5 / 3)  # three stages left: at most three workers help
    assert estimate_eta(STAGES, workers=0) is None  # nobody listens on the queue
    assert estimate_eta([s for s in STAGES if s["status"] != "done"], workers=2) is None  # nothing finished to measure
    assert estimate_eta(STAGES[:4], workers=1) == 0.0
    timed = [
        _stage("init", "done", started_at="2026-01-01T00:00:00+00:00", ended_at="2026-01-01T00:01:40+00:00"),
        _stage("path/b", "queued"),
    ]
    assert estimate_eta(timed, workers=1) == pytest.approx(100.0)  # no stage.json seconds: the job's own start and end


def test_progress_reports_the_eta_for_the_workers_on_the_studys_own_queue(make_app, rconn):
    from worker.runner import make_worker

    api = make_app(queues="gpu")
    study = api.create({"preset": "smoke", "queue": "gpu"})
    status = {"state": "running", "stages": STAGES, "done": 4, "total": len(STAGES), "counts": {}, "plan_job": {}, "log_tail": []}
    syncer = api.app.state.syncer

    def eta_after_sync() -> float | None:
        with api.sessions() as s:
            syncer.apply(s, s.get(Study, study["id"]), status)
        return api.get(f"/api/studies/{study['id']}/progress").json()["eta_s"]

    elsewhere = make_worker(rconn, ["lmc"], name="elsewhere")
    elsewhere.register_birth()
    assert eta_after_sync() is None  # a worker on another queue will never run this study's stages
    workers = [make_worker(rconn, ["gpu"], name=f"gpu{i}") for i in range(2)]
    for w in workers:
        w.register_birth()
    try:
        assert eta_after_sync() == pytest.approx(25 * 2.5 / 2)
    finally:
        for w in [*workers, elsewhere]:
            w.register_death()
