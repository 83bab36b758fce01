"""The sync task on a real (tiny) run: state, stage jobs, progress, summary tables and artifacts reach the store;
failures keep what finished."""

from __future__ import annotations

import json

import pytest

from app.api.jsonsafe import jsonsafe
from app.api.models import Study
from tests.helpers.api import read_json, tiny_config
from worker import study_status


@pytest.fixture
def finished(api, run_dir) -> dict:
    """A study of the tiny run's config, submitted, then mirrored by one sync tick (every stage.json exists)."""
    study = api.create({"config": tiny_config(), "tags": ["tiny"]})
    assert study["run_id"] == run_dir.name
    api.sync()
    return api.get(f"/api/studies/{study['id']}").json()


def _stages(run_dir) -> list[dict]:
    return read_json(run_dir / "stages.json")


def test_sync_mirrors_a_finished_run(api, finished, run_dir):
    sid = finished["id"]
    plan = _stages(run_dir)
    assert finished["status"] == "finished" and finished["error"] is None
    assert finished["stages_done"] == finished["stages_total"] == len(plan)
    assert finished["started_at"] and finished["finished_at"]
    jobs = api.get(f"/api/studies/{sid}/jobs").json()
    assert [j["key"] for j in jobs] == [s["key"] for s in plan] and {j["status"] for j in jobs} == {"done"}
    prog = api.get(f"/api/studies/{sid}/progress").json()
    assert (prog["done"], prog["total"], prog["fraction"], prog["running"], prog["failed"]) == (len(plan), len(plan), 1.0, [], [])
    res = api.get(f"/api/studies/{sid}/results").json()
    summary = read_json(run_dir / "summary.json")
    assert res["available"] and res["status"] == "finished"
    # the rows as summary.json has them, each with the reading of its mask id added (test_api_figures.py checks it)
    assert [{k: v for k, v in r.items() if k != "mask_ref"} for r in res["table"]] == jsonsafe(summary["table"])
    assert [{k: v for k, v in r.items() if k != "mask_ref"} for r in res["analysis"]] == jsonsafe(summary["analysis"])
    assert all(r["mask_ref"]["mask"] == r["mask"] for r in res["table"] + res["analysis"])
    assert res["stages"] == summary["stages"] and len(res["table"]) == 10  # 4 sources x round 0 (the shared dense) + 3 pruned x 2 rounds
    on_disk = {(str(p.parent.relative_to(run_dir / "stages")), p.name) for p in (run_dir / "stages").rglob("*") if p.is_file()}
    on_disk |= {("", n) for n in ("config.json", "manifest.json", "stages.json", "summary.json")}
    listed = api.get(f"/api/studies/{sid}/artifacts").json()
    assert {(a["stage"], a["name"]) for a in listed} == on_disk
    some = next(a for a in listed if a["name"] == "masks.safetensors")
    r = api.get(some["url"])
    assert r.status_code == 200 and r.content == (run_dir / "stages" / some["stage"] / "masks.safetensors").read_bytes()
    assert api.get("/api/artifacts/0123456789abcdef").status_code == 404


def test_results_of_a_study_without_a_run_are_empty_not_errors(api):
    study = api.create({"preset": "smoke", "overrides": {"seed": 77}})
    res = api.get(f"/api/studies/{study['id']}/results").json()
    assert (res["available"], res["table"]) == (False, [])
    assert api.get(f"/api/studies/{study['id']}/figures").json()["figures"] == {}
    r = api.get(f"/api/studies/{study['id']}/figures/interpolation")
    assert r.status_code == 404 and "no finished path" in r.json()["detail"]


def test_a_failed_stage_keeps_its_error_and_what_finished(api, run_dir, rconn):
    study = api.create({"config": tiny_config()})
    status = study_status(rconn, study["id"], study["run_id"], str(api.settings.artifact_root))
    broken = status["stages"][-1]
    broken.update(status="failed", error="Traceback ...\nRuntimeError: boom")
    status.update(state="failed", done=status["done"] - 1)
    running = dict(
        status,
        state="running",
        stages=[dict(s, status="running", step=3, total=10, eta_s=42.0) if s is broken else s for s in status["stages"]],
    )
    running["log_tail"] = ["12:00:00 something happened"]
    syncer = api.app.state.syncer
    with api.sessions() as s:
        syncer.apply(s, s.get(Study, study["id"]), running)
    prog = api.get(f"/api/studies/{study['id']}/progress").json()
    assert prog["status"] == "running" and prog["log_tail"] == ["12:00:00 something happened"]
    assert [(j["key"], j["step"], j["total"], j["eta_s"]) for j in prog["running"]] == [(broken["key"], 3, 10, 42.0)]
    assert prog["eta_s"] is None  # the study's ETA needs a live worker on its queue (test_api_eta.py); the stage reports its own
    with api.sessions() as s:
        syncer.apply(s, s.get(Study, study["id"]), status)
    got = api.get(f"/api/studies/{study['id']}").json()
    assert got["status"] == "failed" and "boom" in got["error"] and got["stages_done"] == got["stages_total"] - 1
    failed = api.get(f"/api/studies/{study['id']}/progress").json()["failed"]
    assert [(j["key"], j["error"]) for j in failed] == [(broken["key"], broken["error"])]
    names = {(a["stage"], a["name"]) for a in api.get(f"/api/studies/{study['id']}/artifacts").json()}
    assert ("path/dense/k0/p0", "path.npz") in names and not any(stage == broken["key"] for stage, _ in names)
    assert api.get(f"/api/studies/{study['id']}/results").json()["available"]
    events = api.get(f"/api/studies/{study['id']}/progress/stream").text
    assert json.loads(events.split("data: ")[1].split("\n")[0])["status"] == "failed"
