"""Mask distances and surface splits through the API, on the tiny run (imp, random and distilled.dm pruned for 2 rounds)."""

from __future__ import annotations

from app.api.jsonsafe import jsonsafe
from tests.helpers.api import read_json


def test_results_carry_every_mask_distance_the_stages_recorded(finished_api, run_dir):
    api, study = finished_api
    res = api.get(f"/api/studies/{study['id']}/results").json()
    keys = [s["key"] for s in read_json(run_dir / "stages.json") if s["kind"] == "distances"]
    assert keys == ["distances/k0/r1", "distances/k0/r2"]
    on_disk = [row for key in keys for row in read_json(run_dir / "stages" / key / "stage.json")["rows"]]
    assert res["distances"] == jsonsafe(on_disk)
    # three pruned sources, so three pairs of masks per round
    assert [(r["round"], r["source_a"], r["source_b"]) for r in res["distances"]] == [
        (rnd, a, b) for rnd in (1, 2) for a, b in (("imp", "random"), ("imp", "distilled.dm"), ("random", "distilled.dm"))
    ]
    assert all(r["hamming"] == r["differ"] / r["total"] for r in res["distances"])


def test_surface_split_names_are_checked(finished_api):
    api, study = finished_api
    base = f"/api/studies/{study['id']}/figures/surface"
    assert api.get(f"{base}?split=val").status_code == 422
    r = api.get(f"{base}?split=synthetic.dm")
    assert r.status_code == 404 and "evaluated on test, not 'synthetic.dm'" in r.json()["detail"]
    fig = api.get(f"{base}?encoding=list").json()
    assert fig["residual"] is None and fig["at_points"]["A"]["loss"] > 0  # a 'copies' plane: every model lies on it
