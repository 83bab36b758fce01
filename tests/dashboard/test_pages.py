"""Page helpers without a browser: the studies table's key-result columns and sorting, gallery card pictures, queue labels,
the dashboard's thumbnail route (with a stand-in API client), stage labels from the API's readings, and how pages get
their callbacks and their API client."""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import numpy as np
import pytest
from dash import Input, Output
from flask import Flask

from app.dashboard import create_dash, routes, stages, synthetic
from app.dashboard.callbacks import Callbacks
from app.dashboard.client import ApiError, api
from app.dashboard.pages import gallery, launch, studies
from app.dashboard.pages.study import header, index

DASHBOARD = Path(__file__).resolve().parents[2] / "app" / "dashboard"

STUDY = {
    "id": "s1",
    "name": "mine",
    "status": "finished",
    "preset": "smoke",
    "owner": "ada",
    "tags": ["a"],
    "stages_done": 13,
    "stages_total": 13,
    "created_at": "2026-11-27T10:11:12+00:00",
    "run_id": "r1",
    "queue": "gpu",
    "final_accuracy": 97.3456,
    "largest_barrier": 22.2,
    "sparsity_reached": 36.0,
}


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
    assert (
        launch.queue_label({"name": "lmc", "default": True, "workers": ["w1", "w2"], "busy": 1, "queued": 3})
        == "lmc (default) · 2 workers, 1 busy · 3 jobs waiting"
    )
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
    _meta = header.meta
    study = {"id": "s1", "run_id": "r1", "status": "running", "queue": "gpu-big", "owner": "ann", "tags": []}
    texts = [getattr(b, "children", None) for b in _meta(study)]
    assert "queue gpu-big" in texts and "by ann" in texts
    assert not any(
        isinstance(t, str) and t.startswith("queue") for t in (getattr(b, "children", None) for b in _meta({**study, "queue": None}))
    )


def _ref(key: str, source: str | None, rnd: int | None, k: int | None, pair: int | None) -> dict:
    """A stage reading as the API sends it (lmc_core.foundations.layout.parse_key(key).as_dict())."""
    return {"key": key, "kind": key.split("/")[0], "mask": None, "source": source, "round": rnd, "k": k, "pair": pair, "set": None}


def test_stage_labels_come_from_the_api_readings_not_from_the_key():
    ref = _ref("surface/distilled.dm-k625-r2/k625/p0", "distilled.dm", 2, 625, 0)
    assert stages.label(ref) == "distilled IMP (dm), round 2, k=625, pair 0"
    assert stages.label(_ref("hessian/dense/k0/p1", "dense", 0, 0, 1)) == "dense, round 0, k=0, pair 1"
    # the reading decides, whatever the key spells: a label built by parsing the key would say round 2 here
    assert stages.label({**ref, "round": 5}) == "distilled IMP (dm), round 5, k=625, pair 0"
    assert stages.label(_ref("mask/imp-k0-r1", "imp", 1, 0, None)) == "IMP (real data), round 1"
    assert stages.label({"key": "synthetic/s1", "source": None}) == "synthetic/s1"  # no mask source: the key itself
    idx = {"figures": {"surface": ["surface/a", "surface/b"]}, "stage_refs": {"surface": [_ref("surface/a", "imp", 1, 0, 0)]}}
    assert index.stage_options(idx, "surface") == [
        {"label": "IMP (real data), round 1, k=0, pair 0", "value": "surface/a"},
        {"label": "surface/b", "value": "surface/b"},
    ]
    assert index.stage_keys(idx, "hessian") == [] and index.publishable(idx) == [{"label": "surface", "value": "surface"}]


# Code that reads a stage key or a mask id apart: a regular expression, or splitting on the grammar's separators.
_PARSING = re.compile(
    r"""^\s*import re\b|^\s*from re import|\bre\.(compile|match|fullmatch|search|split)\(|\.r?split\(\s*["']/["']|"""
    r"""\.r?partition\(\s*["'][/-]["']|\.rsplit\(\s*["']-"""
)
# A JSON Schema $ref ("#/$defs/Train") is not a stage key.
_NOT_A_KEY = {("schema_form.py", 'schema["$defs"][ref.split("/")[-1]]')}


def test_the_dashboard_parses_no_stage_key():
    found = []
    for path in sorted(DASHBOARD.rglob("*.py")):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("  #")[0]
            if _PARSING.search(code) and not any(path.name == name and snippet in code for name, snippet in _NOT_A_KEY):
                found.append(f"{path.relative_to(DASHBOARD)}:{n}: {line.strip()}")
    assert not found, "the dashboard must take stage readings from the API (stage_ref, mask_ref), not parse keys:\n" + "\n".join(found)
    assert _PARSING.search('    parts = key.split("/")') and _PARSING.search("_MASK_ID = re.compile(r'(?P<source>.+)-k')")


def test_callbacks_reach_every_app_built_not_only_the_first():
    calls = Callbacks()

    @calls.callback(Output("out", "children"), Input("in", "value"))
    def echo(value: str) -> str:
        return value

    assert echo("x") == "x" and len(calls) == 1  # still a plain function
    counts = []
    for _ in range(2):  # dash.callback would hand its callbacks to the first app only
        app = create_dash("http://127.0.0.1:9")
        client = app.server.test_client()
        client.get("/")
        counts.append(len(client.get("/_dash-dependencies").get_json()))
    assert counts[0] == counts[1] > 30


def test_pages_get_the_api_client_of_the_app_serving_the_request():
    one, two = create_dash("http://api-one:1"), create_dash("http://api-two:2")
    with one.server.test_request_context("/"):
        assert api("t").base_url == "http://api-one:1" and api("t").token == "t" and api().token is None
    with two.server.test_request_context("/"):
        assert api().base_url == "http://api-two:2"
    with pytest.raises(RuntimeError):
        api()  # outside a request: the study page's prefetch falls back to its callbacks
    with Flask(__name__).test_request_context("/"), pytest.raises(RuntimeError, match="bound to no API"):
        api()


def _safetensors(**arrays: np.ndarray) -> bytes:
    """Return a safetensors file holding `arrays` (F32 or I64)."""
    header, blobs, offset = {}, [], 0
    for name, a in arrays.items():
        raw = a.tobytes()
        header[name] = {
            "dtype": {"float32": "F32", "int64": "I64"}[str(a.dtype)],
            "shape": list(a.shape),
            "data_offsets": [offset, offset + len(raw)],
        }
        blobs.append(raw)
        offset += len(raw)
    head = json.dumps(header).encode()
    return struct.pack("<Q", len(head)) + head + b"".join(blobs)


def test_synthetic_sets_find_their_images_by_the_api_reading_of_the_stage():
    images = np.zeros((4, 1, 8, 8), np.float32)

    class Client:
        def artifacts(self, study_id: str) -> list[dict]:
            # an images file of another kind of stage, and one of the set whose stage key is read as kind synthetic, set "s1"
            return [
                {
                    "stage": "experts/ab12",
                    "name": "images.safetensors",
                    "url": "/x",
                    "stage_ref": {"key": "experts/ab12", "kind": "experts", "set": None},
                },
                {
                    "stage": "synthetic/s1",
                    "name": "images.safetensors",
                    "url": "/s1",
                    "stage_ref": {"key": "synthetic/s1", "kind": "synthetic", "set": "s1"},
                },
                {"stage": "", "name": "summary.json", "url": "/sum", "stage_ref": None},
            ]

        def get_bytes(self, url: str) -> bytes:
            assert url == "/s1"
            return _safetensors(images=images, labels=np.array([0, 0, 1, 1]))

    sets = [{"set": "s1", "method": "dm", "evaluation": {}}, {"set": "s2", "method": "mtt", "evaluation": {}}]
    out = synthetic.view(Client(), "study", sets)
    grids = [c for c in out if getattr(c, "id", None) == {"type": "synthetic-grid", "set": "s1"}]
    assert len(grids) == 1 and grids[0].figure.data[0].type == "heatmap"
    assert any("set s2: no stored images" in str(getattr(c, "children", "")) for c in out)


def test_the_study_layout_prefetches_through_the_app_api_and_labels_stages_from_readings():
    from app.dashboard.client import EXTENSION
    from app.dashboard.pages import study

    surface = {
        "key": "surface/imp-k0-r2/k0/p0",
        "kind": "surface",
        "mask": "imp-k0-r2",
        "source": "imp",
        "round": 2,
        "k": 0,
        "pair": 0,
        "set": None,
    }

    class Client:
        def study(self, sid: str) -> dict:
            return {"id": sid, "name": "mine", "status": "finished", "run_id": "r1", "tags": []}

        def progress(self, sid: str) -> dict:
            return {"done": 5, "total": 5, "status": "finished", "running": [], "failed": [], "log_tail": []}

        def figures_index(self, sid: str) -> dict:
            return {"study_id": sid, "figures": {"surface": [surface["key"]]}, "stage_refs": {"surface": [surface]}}

        def results(self, sid: str) -> dict:
            return {"table": [], "analysis": []}

    app = create_dash("http://127.0.0.1:9")
    page = study.layout("s1")  # outside a request: no API to ask, the callbacks fetch instead
    assert page.children[1].data is None and page.children[5].interval == study.header.FIRST_POLL_MS
    app.server.extensions[EXTENSION] = lambda token=None: Client()
    with app.server.test_request_context("/study/s1"):
        page = study.layout("s1", tab="landscape")
    stores = {c.id: c for c in page.children if getattr(c, "id", None) in ("st-rev", "st-index", "st-poll")}
    assert stores["st-rev"].data == "5:finished" and stores["st-index"].data["_rev"] == "5:finished"
    assert stores["st-poll"].disabled, "a finished study is not polled"
    dropdown = next(d for d in _walk(page) if getattr(d, "id", None) == "st-surface-stage")
    assert dropdown.value == surface["key"] and dropdown.options == [
        {"label": "IMP (real data), round 2, k=0, pair 0", "value": surface["key"]}
    ]


def _walk(component: object) -> list:
    """Return the component and every component below it."""
    out = [component]
    children = getattr(component, "children", None)
    for child in children if isinstance(children, list) else [children] if children is not None else []:
        out += _walk(child)
    return out


def test_synthetic_scores_name_their_spread_and_n():
    rows = synthetic.score_rows(
        [
            {
                "set": "dm",
                "method": "dm",
                "decoded": 100,
                "real_examples": 5,
                "evaluation": {
                    "synthetic": {"mean": 80.0, "std": 1.5, "accuracies": [78.5, 81.5]},
                    "noise": {"mean": 10.0, "std": 0.0, "accuracies": [10.0]},
                },
            }
        ]
    )
    assert rows[0]["synthetic (acc %)"] == "80.0 ± 1.5 (sd, n=2)"
    assert "10.0 (n=1)" in rows[0].values()
