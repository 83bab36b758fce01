"""The gallery: publish results and figures, permalinks, filters, stars, and who may edit."""

from __future__ import annotations

from tests.helpers.api import tiny_config


def test_publish_star_filter_and_permalink(api, run_dir):
    study = api.create({"config": tiny_config()})
    api.sync()
    sid = study["id"]
    surface = next(k for k in api.get(f"/api/studies/{sid}/figures").json()["figures"]["surface"])
    a = api.post(
        "/api/gallery",
        {
            "study_id": sid,
            "kind": "figure",
            "figure": "surface",
            "stage": surface,
            "title": "A basin",
            "tags": ["surface", "mnist1d"],
            "notes": "copies sit in one valley",
        },
    )
    assert a.status_code == 201, a.text
    a = a.json()
    b = api.post("/api/gallery", {"study_id": sid, "kind": "result", "title": "Round table", "tags": ["mnist1d"]}).json()
    c = api.post("/api/gallery", {"study_id": sid, "figure": "interpolation", "title": "Paths"}).json()
    assert a["permalink"] == f"/api/gallery/{a['id']}" and a["author"] == "eve" and a["study_name"] == study["name"]
    assert api.get(a["permalink"]).json()["title"] == "A basin"

    assert api.post(f"/api/gallery/{c['id']}/star").json()["stars"] == 1
    assert api.post(f"/api/gallery/{c['id']}/star").json()["stars"] == 1  # idempotent
    assert api.post(f"/api/gallery/{c['id']}/star", role="admin").json()["stars"] == 2
    assert api.post(f"/api/gallery/{a['id']}/star", role="admin").json()["starred"] is True
    assert api.post(f"/api/gallery/{a['id']}/star", role="viewer").status_code == 403

    def ids(query: str, role: str | None = None) -> list[str]:
        page = api.get(f"/api/gallery?{query}", role=role).json()
        assert page["count"] == len(page["data"]) or "limit" in query
        return [e["id"] for e in page["data"]]

    assert ids("sort=-created_at") == [c["id"], b["id"], a["id"]]
    assert ids("sort=-stars") == [c["id"], a["id"], b["id"]]
    assert ids("sort=title") == [a["id"], c["id"], b["id"]]
    assert ids("tag=mnist1d&sort=created_at") == [a["id"], b["id"]]
    assert ids("tag=mnist1d&tag=surface") == [a["id"]]
    assert ids("figure=interpolation") == [c["id"]] and ids("kind=result") == [b["id"]]
    assert ids("q=VALLEY") == [a["id"]]
    assert ids("starred=true", role="editor") == [c["id"]]
    assert api.get("/api/gallery?starred=true").status_code == 401
    assert api.delete(f"/api/gallery/{c['id']}/star").json()["stars"] == 1
    assert ids(f"study_id={sid}&limit=2") == [c["id"], b["id"]]
    assert api.get(f"/api/gallery?study_id={sid}&limit=2&offset=2").json() | {"data": None} == {
        "data": None,
        "count": 3,
        "limit": 2,
        "offset": 2,
    }


def test_publishing_checks_the_figure_and_stage(api, run_dir):
    study = api.create({"config": tiny_config()})
    api.sync()
    sid = study["id"]

    def loc(body: dict) -> set[str]:
        r = api.post("/api/gallery", {"study_id": sid, "title": "t", **body})
        assert r.status_code == 422, r.text
        return {e["loc"] for e in r.json()["detail"]}

    assert loc({"kind": "figure"}) == {"figure"}
    assert loc({"figure": "surface", "stage": "hessian/imp-k0-r2/k0/p0"}) == {"stage"}
    assert loc({"figure": "surface", "stage": "surface/imp-k0-r9/k0/p0"}) == {"stage"}
    assert loc({"figure": "sparsity", "stage": "surface/imp-k0-r2/k0/p0"}) == {"stage"}
    assert loc({"kind": "result", "figure": "sparsity"}) == {"kind"}
    r = api.post("/api/gallery", {"study_id": "nope", "title": "t", "figure": "sparsity"})
    assert r.status_code == 404 and "GET /api/studies" in r.json()["detail"]
    assert api.get("/api/gallery/zzz").status_code == 404


def test_only_the_author_or_an_admin_edits(api):
    study = api.create({"preset": "smoke"})
    entry = api.post("/api/gallery", {"study_id": study["id"], "kind": "result", "title": "mine"}).json()
    other = api.post("/api/tokens", {"user": "otto", "role": "editor"}, role="admin").json()["token"]
    headers = {"Authorization": f"Bearer {other}"}
    assert api.client.patch(f"/api/gallery/{entry['id']}", json={"title": "theirs"}, headers=headers).status_code == 403
    assert api.client.delete(f"/api/gallery/{entry['id']}", headers=headers).status_code == 403
    r = api.patch(f"/api/gallery/{entry['id']}", {"title": "better", "tags": ["z", "a"], "notes": "n"}, role="admin")
    assert (r.json()["title"], r.json()["tags"], r.json()["notes"]) == ("better", ["a", "z"], "n")
    assert api.delete(f"/api/gallery/{entry['id']}").status_code == 204
    assert api.get(f"/api/gallery/{entry['id']}").status_code == 404
    assert api.get(f"/api/studies/{study['id']}").status_code == 200  # the study stays
