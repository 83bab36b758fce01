"""Studies: creation from presets and configs, validation errors, 404s, listing, clone, archive, cancel, limits, Redis outages."""

from __future__ import annotations

import json
import random
from datetime import datetime, timedelta, timezone

import pytest
from rq.job import Job
from sqlalchemy import func, select

from app.api import studies as store
from app.api.models import Note, Study
from lmc_core.foundations.config import StudyConfig
from lmc_core.studies.presets import PRESETS, preset
from worker import SERIALIZER, plan_job_id


def _plan_job(rconn, study: dict) -> Job:
    return Job.fetch(study["plan_job_id"] if "plan_job_id" in study else plan_job_id(study["id"]), connection=rconn, serializer=SERIALIZER)


def _count(api) -> int:
    with api.sessions() as s:
        return s.scalar(select(func.count()).select_from(Study))


def test_create_from_preset_records_the_study_and_queues_a_plan_job(api, rconn):
    study = api.create({"preset": "smoke", "overrides": {"train.epochs": 3}, "tags": ["demo", "demo", " x "], "note": "first try"})
    expected = preset("smoke", {"train": {"epochs": 3}})
    assert study["status"] == "queued" and study["submitted"] and study["owner"] == "eve"
    assert study["run_id"] == expected.run_id() and study["config"] == expected.model_dump(mode="json")
    assert study["tags"] == ["demo", "x"] and study["preset"] == "smoke"
    with api.sessions() as s:
        row = s.get(Study, study["id"])
        assert row.config["train"]["epochs"] == 3 and row.plan_job_id == plan_job_id(study["id"])
        assert [n.text for n in s.scalars(select(Note).where(Note.study_id == row.id))] == ["first try"]
    job = _plan_job(rconn, study)
    assert job.func_name == "worker.jobs.plan_study" and job.get_status().value == "queued"
    assert job.args[0] == study["id"] and job.args[1] == study["config"]
    assert job.id in rconn.lrange("rq:queue:lmc", 0, -1)[0].decode()
    assert api.get(f"/api/studies/{study['id']}").json()["config"] == study["config"]


def test_create_from_a_partial_config_fills_defaults(api):
    study = api.create({"config": {"name": "mine", "train": {"epochs": 4}}, "overrides": {"pruning.rounds": 1}})
    cfg = StudyConfig(name="mine", train={"epochs": 4}, pruning={"rounds": 1})
    assert study["name"] == "mine" and study["run_id"] == cfg.run_id() and study["preset"] is None
    r = api.post("/api/studies/validate", {"config": {"train": {"epochs": 4}}, "overrides": {"pruning.rounds": 1}}, role=None)
    assert r.status_code == 200
    assert r.json()["run_id"] == cfg.run_id() and r.json()["existing"] == [study["id"]]
    assert _count(api) == 1  # validate writes nothing


def _locs(r) -> set[str]:
    assert r.status_code == 422, r.text
    return {e["loc"] for e in r.json()["detail"]}


def test_invalid_configs_answer_422_with_dotted_paths_and_write_nothing(api):
    r = api.post("/api/studies", {"config": {"train": {"epochs": 0}, "pruning": {"rate": 2}, "trian": {}}})
    assert _locs(r) == {"train.epochs", "pruning.rate", "trian"}
    assert "train.epochs" in r.json()["message"]
    assert _locs(api.post("/api/studies", {"preset": "smoke", "overrides": {"analysis.surface.resolution": 4}})) == {
        "analysis.surface.resolution"
    }
    r = api.post("/api/studies", {"preset": "smoke", "overrides": {"pruning.mask_sources": ["dense", "bogus"]}})
    assert _locs(r) == {"pruning.mask_sources"}
    assert _locs(api.post("/api/studies", {"preset": "smoke", "overrides": {"train.epochs.x": 1}})) == {"train.epochs"}
    assert _locs(api.post("/api/studies", {"preset": "smoke", "overrides": {"train..lr": 1}})) == {"train..lr"}
    assert _locs(api.post("/api/studies", {"preset": "smoke", "config": {}})) == {"preset"}
    assert _locs(api.post("/api/studies", {"preset": "smoke", "tags": [""]})) == {"body.tags"}
    assert _locs(api.get("/api/studies?limit=0")) == {"query.limit"}
    assert _locs(api.post("/api/studies/validate", {"config": {"stability": {"pairs": [[1, 1]]}}})) == {"stability.pairs"}
    # what Python's JSON parser and pydantic accept but strict JSON and PostgreSQL do not
    raw = api.client.post(
        "/api/studies",
        content=b'{"config": {"train": {"lr": Infinity}}}',
        headers={**api.headers("editor"), "content-type": "application/json"},
    )
    assert _locs(raw) == {"train.lr"} and "finite" in raw.text
    assert _locs(api.post("/api/studies", {"config": {"name": "x" * 201}})) == {"name"}
    assert _locs(api.post("/api/studies", {"preset": "smoke", "note": "a\x00b"})) == {"body.note"}
    assert _locs(api.post("/api/studies", {"preset": "smoke", "overrides": {"data.path": "a\x00b"}})) == {"data.path"}
    assert api.get("/api/studies/a%00b").status_code in (404, 422)  # SQLite finds nothing; PostgreSQL refuses the byte
    assert api.get("/api/studies?q=a%00b").status_code in (200, 422)
    assert _count(api) == 0


def test_unknown_preset_and_study_answer_404_naming_what_exists(api):
    r = api.post("/api/studies", {"preset": "smokey"})
    assert r.status_code == 404
    assert all(name in r.json()["detail"] for name in PRESETS) and r.json()["available"] == list(PRESETS)
    r = api.get("/api/presets/smokey")
    assert r.status_code == 404 and "smoke" in r.json()["detail"]
    for method, url in (
        ("get", "/api/studies/nope"),
        ("post", "/api/studies/nope/clone"),
        ("post", "/api/studies/nope/cancel"),
        ("get", "/api/studies/nope/results"),
        ("get", "/api/studies/nope/progress"),
    ):
        r = api.get(url) if method == "get" else api.post(url, {})
        assert r.status_code == 404, url
        assert "GET /api/studies" in r.json()["detail"]


def test_presets_and_schema(api):
    presets = api.get("/api/presets").json()
    assert [p["name"] for p in presets] == list(PRESETS)
    smoke = api.get("/api/presets/smoke").json()
    assert smoke["run_id"] == preset("smoke").run_id() and smoke["config"] == preset("smoke").model_dump(mode="json")
    schema = api.get("/api/schema/study").json()
    assert schema == StudyConfig.model_json_schema()
    assert "train" in schema["properties"]


@pytest.fixture
def fifty(api) -> list[dict]:
    """50 studies straight into the store, with names, tags, states, presets, archive flags and creation times to sort on."""
    rng = random.Random(0)
    base = datetime(2026, 1, 1, tzinfo=timezone.utc)
    states = ["queued", "running", "finished", "failed", "cancelled"]
    order = list(range(50))
    rng.shuffle(order)  # inserted out of creation order
    made = []
    with api.sessions() as s:
        for i in order:
            name = f"{'Alpha' if i % 3 == 0 else 'beta'}-{i:02d}{'%' if i == 7 else ''}"
            tags = [t for t, keep in (("even", i % 2 == 0), ("five", i % 5 == 0)) if keep]
            cfg = StudyConfig(name=name, seed=i)
            row = store.create(s, cfg, preset="smoke" if i % 4 == 0 else None, owner_id=None, tags=tags)
            row.status, row.archived = states[i % 5], i % 7 == 0
            row.created_at = row.updated_at = base + timedelta(minutes=i)
            s.commit()
            made.append(
                {
                    "id": row.id,
                    "i": i,
                    "name": name,
                    "tags": tags,
                    "status": row.status,
                    "archived": row.archived,
                    "preset": row.preset,
                    "created_at": row.created_at,
                }
            )
    return made


def _all_pages(api, query: str, limit: int) -> tuple[list[str], int]:
    ids, offset, count = [], 0, None
    while True:
        page = api.get(f"/api/studies?{query}&limit={limit}&offset={offset}").json()
        count = page["count"] if count is None else count
        assert page["count"] == count and page["limit"] == limit and page["offset"] == offset
        assert len(page["data"]) <= limit
        ids += [d["id"] for d in page["data"]]
        if len(page["data"]) < limit:
            return ids, count
        offset += limit


def test_listing_filters_sorts_and_pages(api, fifty):
    def expect(pred, key, reverse=False):
        rows = sorted((m for m in fifty if pred(m)), key=key, reverse=reverse)
        return [m["id"] for m in rows]

    visible = lambda m: not m["archived"]  # noqa: E731
    newest = expect(visible, lambda m: m["created_at"], reverse=True)
    ids, count = _all_pages(api, "sort=-created_at", 7)
    assert ids == newest and count == len(newest) == 42
    assert _all_pages(api, "sort=name", 9)[0] == expect(visible, lambda m: m["name"])
    assert _all_pages(api, "sort=-name", 50)[0] == expect(visible, lambda m: m["name"], reverse=True)
    # equal sort keys: the id breaks ties, so pages neither repeat nor skip a study
    by_status, n = _all_pages(api, "sort=status", 4)
    assert len(by_status) == len(set(by_status)) == n == 42
    assert [next(m["status"] for m in fifty if m["id"] == i) for i in by_status] == sorted(m["status"] for m in fifty if visible(m))

    def ids_of(query: str) -> set[str]:
        return set(_all_pages(api, query, 200)[0])

    assert ids_of("status=finished&status=failed") == {m["id"] for m in fifty if visible(m) and m["status"] in ("finished", "failed")}
    assert ids_of("tag=even&tag=five") == {m["id"] for m in fifty if visible(m) and m["i"] % 10 == 0}
    assert ids_of("q=ALPHA") == {m["id"] for m in fifty if visible(m) and m["name"].startswith("Alpha")}
    assert ids_of("q=%25&archived=any") == {m["id"] for m in fifty if "%" in m["name"]}  # a literal %, not a wildcard
    assert ids_of("preset=smoke&archived=any") == {m["id"] for m in fifty if m["preset"] == "smoke"}
    assert ids_of("archived=true") == {m["id"] for m in fifty if m["archived"]}
    assert len(ids_of("archived=any")) == 50
    assert _locs(api.get("/api/studies?sort=colour")) == {"query.sort"}


def test_clone_with_edits_changes_the_run_id(api, rconn):
    source = api.create({"preset": "smoke", "tags": ["base"]})
    same = api.post(f"/api/studies/{source['id']}/clone", {"name": "renamed"})
    assert same.status_code == 201
    assert same.json()["run_id"] == source["run_id"] and same.json()["name"] == "renamed"  # the name is not part of the run id
    edited = api.post(f"/api/studies/{source['id']}/clone", {"overrides": {"train.epochs": 5}, "config": {"pruning": {"rounds": 1}}}).json()
    assert edited["run_id"] != source["run_id"] and edited["parent_id"] == source["id"] and edited["tags"] == ["base"]
    assert edited["config"]["train"]["epochs"] == 5 and edited["config"]["pruning"]["rounds"] == 1
    assert edited["config"]["pruning"]["mask_sources"] == source["config"]["pruning"]["mask_sources"]  # partial configs merge
    assert edited["run_id"] == preset("smoke", {"train": {"epochs": 5}, "pruning": {"rounds": 1}}).run_id()
    assert _plan_job(rconn, edited).args[0] == edited["id"]
    assert _locs(api.post(f"/api/studies/{source['id']}/clone", {"overrides": {"train.epochs": 0}})) == {"train.epochs"}


def test_archive_hides_from_default_lists(api):
    study = api.create({"preset": "smoke"})
    assert api.post(f"/api/studies/{study['id']}/archive", role="viewer").status_code == 403
    assert api.post(f"/api/studies/{study['id']}/archive").json()["archived"] is True
    assert api.get("/api/studies").json()["count"] == 0
    assert [s["id"] for s in api.get("/api/studies?archived=true").json()["data"]] == [study["id"]]
    assert api.post(f"/api/studies/{study['id']}/unarchive").json()["archived"] is False
    r = api.patch(f"/api/studies/{study['id']}", {"tags": ["b", "a"], "name": "new name"})
    assert r.json()["tags"] == ["a", "b"] and r.json()["name"] == "new name"
    assert api.get("/api/studies?q=new").json()["count"] == 1


def test_cancel_stops_the_jobs_and_sticks(api, rconn):
    study = api.create({"preset": "smoke"})
    r = api.post(f"/api/studies/{study['id']}/cancel")
    assert r.status_code == 200 and r.json()["study"]["status"] == "cancelled" and r.json()["jobs_cancelled"] >= 1
    assert _plan_job(rconn, study).get_status().value == "canceled"
    assert api.post(f"/api/studies/{study['id']}/cancel").status_code == 409
    api.sync()
    assert api.get(f"/api/studies/{study['id']}").json()["status"] == "cancelled"
    events = api.get(f"/api/studies/{study['id']}/progress/stream").text
    data = [json.loads(line[len("data: ") :]) for line in events.splitlines() if line.startswith("data: ")]
    assert len(data) == 1 and data[0]["status"] == "cancelled"  # one event, then the stream ends


def test_notes(api):
    study = api.create({"preset": "smoke"})
    assert api.post(f"/api/studies/{study['id']}/notes", {"text": "looks unstable"}).status_code == 201
    assert api.post(f"/api/studies/{study['id']}/notes", {"text": "x"}, role="viewer").status_code == 403
    assert [(n["text"], n["author"]) for n in api.get(f"/api/studies/{study['id']}/notes").json()] == [("looks unstable", "eve")]


def test_limits_name_the_setting(make_app):
    api = make_app(max_grid_resolution=51, max_epochs=100, max_jobs_per_user=2, max_request_bytes=5000)
    r = api.post("/api/studies", {"preset": "smoke", "overrides": {"analysis.surface.resolution": 53, "train.epochs": 101}})
    assert _locs(r) == {"analysis.surface.resolution", "train.epochs"}
    assert "LMC_MAX_GRID_RESOLUTION" in r.text and "LMC_MAX_EPOCHS" in r.text
    first, _ = api.create({"preset": "smoke"}), api.create({"preset": "smoke", "overrides": {"seed": 1}})
    r = api.post("/api/studies", {"preset": "smoke", "overrides": {"seed": 2}})
    assert r.status_code == 429 and "LMC_MAX_JOBS_PER_USER" in r.json()["detail"]
    assert api.post(f"/api/studies/{first['id']}/clone", {}).status_code == 429
    api.post(f"/api/studies/{first['id']}/cancel")
    api.create({"preset": "smoke", "overrides": {"seed": 2}})  # room again
    r = api.post("/api/studies", {"preset": "smoke", "note": "x" * 6000})
    assert r.status_code == 413 and "LMC_MAX_REQUEST_BYTES" in r.json()["detail"]
    chunked = api.client.post("/api/studies", content=iter([b'{"note": "', b"y" * 6000, b'"}']), headers=api.headers("editor"))
    assert chunked.status_code == 413


def test_redis_down_gives_503_and_reconciliation_submits_later(make_app, rconn):
    down = make_app(redis_url="redis://127.0.0.1:1/0")
    r = down.post("/api/studies", {"preset": "smoke"})
    assert r.status_code == 503 and "Redis" in r.json()["detail"] and "LMC_REDIS_URL" in r.json()["detail"]
    sid = r.json()["study_id"]
    row = down.get(f"/api/studies/{sid}").json()
    assert row["status"] == "queued" and row["submitted"] is False
    assert down.get("/api/health").json()["redis"]["ok"] is False
    assert down.post(f"/api/studies/{sid}/cancel").status_code == 200  # never submitted: nothing in Redis to stop
    r = down.post("/api/studies", {"preset": "smoke", "overrides": {"seed": 5}})
    sid = r.json()["study_id"]
    up = make_app()  # start-up reconciliation, now that Redis answers
    assert up.get(f"/api/studies/{sid}").json()["submitted"] is True
    assert _plan_job(rconn, {"id": sid}).get_status().value == "queued"
    assert up.get("/api/health").json() == {
        "status": "ok",
        "database": {"ok": True, "backend": up.app.state.engine.dialect.name},
        "redis": {"ok": True},
        "workers": 0,
        "version": "0.1.0",
    }


def test_an_emptied_redis_loses_no_study(make_app, rconn):
    api = make_app()
    study = api.create({"preset": "smoke"})
    rconn.flushdb()  # as after a Redis restart without persistence
    make_app()  # the next start of the service reconciles
    assert _plan_job(rconn, study).args[0] == study["id"]


def test_progress_stream_sends_changes_and_ends_with_the_study(api):
    study = api.create({"preset": "smoke"})
    events = []
    with api.client.stream("GET", f"/api/studies/{study['id']}/progress/stream") as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[len("data: ") :]))
                if len(events) == 1:
                    assert api.post(f"/api/studies/{study['id']}/cancel").status_code == 200
    assert [e["status"] for e in events] == ["queued", "cancelled"]
    assert api.get(f"/api/studies/{study['id']}/progress/stream?x=1", role=None).status_code == 200
    assert api.get("/api/studies/nope/progress/stream").status_code == 404
