"""Page helpers without a browser: the studies table's key-result columns and sorting, gallery card pictures, queue labels,
and the dashboard's thumbnail route (with a stand-in API client)."""

from __future__ import annotations

from flask import Flask

from app.dashboard import routes
from app.dashboard.client import ApiError
from app.dashboard.pages import gallery, launch, studies

STUDY = {"id": "s1", "name": "mine", "status": "finished", "preset": "smoke", "owner": "ada", "tags": ["a"], "stages_done": 13,
         "stages_total": 13, "created_at": "2026-11-27T10:11:12+00:00", "run_id": "r1", "queue": "gpu",
         "final_accuracy": 97.3456, "largest_barrier": 22.2, "sparsity_reached": 36.0}


def test_study_rows_carry_the_key_results_of_the_list_with_units_in_the_headers():
    row = studies.row(STUDY)
    assert (row["final_accuracy"], row["largest_barrier"], row["sparsity_reached"], row["queue"]) == (97.3456, 22.2, 36.0, "gpu")
    assert studies.row({**STUDY, "final_accuracy": None})["final_accuracy"] is None
    columns = {c: studies._column(c) for c in studies.NUMERIC}
    assert columns["sparsity_reached"]["format"].to_plotly_json()["specifier"] == ".1f"
    assert columns["final_accuracy"]["format"].to_plotly_json()["specifier"] == ".2f"
    assert [columns[c]["name"] for c in studies.NUMERIC] == ["final accuracy (%)", "largest error barrier (points)", "sparsity reached (%)"]
    assert all(c["type"] == "numeric" for c in columns.values())


def test_key_result_columns_sort_on_the_server_and_others_on_the_page():
    desc = [{"column_id": "final_accuracy", "direction": "desc"}]
    assert studies.sort_param(desc) == "-final_accuracy" and studies.sort_param(None) == "-created_at"
    assert studies.sort_param([{"column_id": "largest_barrier", "direction": "asc"}]) == "largest_barrier"
    assert studies.sort_by_of("-final_accuracy") == desc and studies.sort_by_of("nonsense") == [] and studies.sort_by_of(None) == []
    rows = [{"owner": "bo"}, {"owner": ""}, {"owner": "Al"}]
    assert studies.sort_rows(rows, desc) == rows  # the API sorted them already
    assert studies.sort_param([{"column_id": "owner", "direction": "asc"}]) == "-created_at"
    assert [r["owner"] for r in studies.sort_rows(rows, [{"column_id": "owner", "direction": "asc"}])] == ["Al", "bo", ""]
    assert [r["owner"] for r in studies.sort_rows(rows, [{"column_id": "owner", "direction": "desc"}])] == ["bo", "Al", ""]


def test_gallery_cards_show_the_png_when_there_is_one():
    entry = {"id": "e1", "title": "t", "thumbnail": {"url": "/api/gallery/e1/thumbnail.png", "width": 480, "height": 320, "etag": '"abc"'}}
    img = gallery.picture(entry)
    assert img.src == "/thumbnail/e1.png?v=abc" and "thumb-png" in img.className
    assert gallery.picture({**entry, "thumbnail": None}).src == "/preview/e1.svg"


def test_queue_labels_say_who_listens():
    assert launch.queue_label({"name": "lmc", "default": True, "workers": ["w1", "w2"], "busy": 1, "queued": 3}) == \
        "lmc (default) · 2 workers, 1 busy · 3 jobs waiting"
    assert "no worker listening" in launch.queue_label({"name": "gpu", "default": False, "workers": [], "busy": 0, "queued": 0})
    assert "unknown" in launch.queue_label({"name": "gpu", "default": False, "workers": None, "busy": None, "queued": None})


class _Client:
    def __init__(self, answer):
        self.answer, self.asked = answer, []

    def thumbnail(self, entry_id, etag=None):
        self.asked.append((entry_id, etag))
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def _server(answer) -> tuple[Flask, _Client]:
    server, client = Flask(__name__), _Client(answer)
    routes.install(server, lambda token=None: client)
    return server, client


def test_thumbnail_route_passes_the_png_and_its_etag_through():
    server, client = _server((b"\x89PNG...", '"abc"'))
    r = server.test_client().get("/thumbnail/e1.png?v=abc")
    assert r.status_code == 200 and r.data == b"\x89PNG..." and r.mimetype == "image/png"
    assert r.headers["ETag"] == '"abc"' and "immutable" in r.headers["Cache-Control"]
    assert "no-cache" in server.test_client().get("/thumbnail/e1.png").headers["Cache-Control"]  # unversioned: revalidate

    server, client = _server((None, '"abc"'))  # the API said 304
    r = server.test_client().get("/thumbnail/e1.png", headers={"If-None-Match": '"abc"'})
    assert r.status_code == 304 and client.asked == [("e1", '"abc"')]

    server, _ = _server(ApiError("no thumbnail", 404))
    r = server.test_client().get("/thumbnail/e1.png")
    assert r.status_code == 302 and r.headers["Location"].endswith("/preview/e1.svg")


def test_study_header_names_its_queue():
    from app.dashboard.pages.study import _meta

    study = {"id": "s1", "run_id": "r1", "status": "running", "queue": "gpu-big", "owner": "ann", "tags": []}
    texts = [getattr(b, "children", None) for b in _meta(study)]
    assert "queue gpu-big" in texts and "by ann" in texts
    assert not any(isinstance(t, str) and t.startswith("queue") for t in (getattr(b, "children", None) for b in _meta({**study, "queue": None})))
