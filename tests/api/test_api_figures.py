"""Figures and arrays of a real (tiny) run: npz files round-trip byte for byte; figure JSON equals the stored arrays; every
stage key and mask id the API hands out comes with its reading by the layout module's parser."""

from __future__ import annotations

import io

import numpy as np
import pytest

from app.api import figures
from app.api.figures import decode
from app.api.jsonsafe import jsonsafe
from lmc_core.foundations.layout import parse_key, parse_mask_id
from tests.helpers.api import read_json


@pytest.fixture(scope="module")
def api(finished_api):
    """The module's app holding the finished tiny study."""
    return finished_api[0]


@pytest.fixture(scope="module")
def finished(finished_api):
    """The finished tiny study, as GET /api/studies/{id} returns it."""
    return finished_api[1]


def _stages(run_dir) -> list[dict]:
    return read_json(run_dir / "stages.json")


def _arrays(path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


@pytest.mark.parametrize("kind", ["path", "surface", "hessian"])
def test_arrays_round_trip_as_npz_with_etag(api, finished, run_dir, kind):
    sid = finished["id"]
    key = next(s["key"] for s in _stages(run_dir) if s["kind"] == kind)
    r = api.get(f"/api/studies/{sid}/arrays/{kind}?stage={key}")
    assert r.status_code == 200 and r.headers["content-type"] == "application/octet-stream"
    stored = _arrays(run_dir / "stages" / key / f"{kind}.npz")
    with np.load(io.BytesIO(r.content), allow_pickle=False) as got:
        assert sorted(got.files) == sorted(stored)
        for name, arr in stored.items():
            np.testing.assert_array_equal(got[name], arr)
    etag = r.headers["etag"]
    again = api.client.get(f"/api/studies/{sid}/arrays/{kind}?stage={key}", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    r = api.get(f"/api/studies/{sid}/arrays/{kind}?stage=path/../../etc")
    assert r.status_code == 404 and key in r.json()["detail"]  # names the stages that exist


def test_interpolation_figure_equals_the_paths(api, finished, run_dir):
    paths = [s["key"] for s in _stages(run_dir) if s["kind"] == "path"]
    table = read_json(run_dir / "summary.json")["table"]
    for encoding in ("typed", "list"):
        fig = api.get(f"/api/studies/{finished['id']}/figures/interpolation?encoding={encoding}").json()
        assert fig["encoding"] == encoding and sorted(c["stage"] for c in fig["curves"]) == sorted(paths)
        for curve in fig["curves"]:
            stored = _arrays(run_dir / "stages" / curve["stage"] / "path.npz")
            np.testing.assert_array_equal(decode(curve["alphas"]), stored["alphas"].astype(np.float32))
            for split in ("test", "train"):
                np.testing.assert_array_equal(decode(curve["error"][split]), stored[f"error_{split}"].astype(np.float32))
                np.testing.assert_array_equal(decode(curve["loss"][split]), stored[f"loss_{split}"].astype(np.float32))
            row = next(r for r in table if r["mask"] == curve["mask"] and r["rewind_step"] == curve["rewind_step"])
            assert (curve["source"] in (row["source"], "dense"), curve["round"], curve["sparsity"]) == (True, row["round"], row["sparsity"])
    typed = api.get(f"/api/studies/{finished['id']}/figures/interpolation").json()["curves"][0]["alphas"]
    assert typed["dtype"] == "f4" and "shape" not in typed  # plotly's typed array spec for a 1-D array


def test_sparsity_figure_follows_the_table(api, finished, run_dir):
    table = read_json(run_dir / "summary.json")["table"]
    fig = api.get(f"/api/studies/{finished['id']}/figures/sparsity").json()
    assert {s["source"] for s in fig["series"]} == {"dense", "imp", "random", "distilled.dm"}
    imp = next(s for s in fig["series"] if s["source"] == "imp")
    rows = sorted((r for r in table if r["source"] == "imp"), key=lambda r: r["round"])
    assert imp["round"] == [0, 1, 2]
    assert imp["sparsity"] == [r["sparsity"] for r in rows] and imp["error_barrier"] == [r["error_barrier"] for r in rows]
    assert imp["sparsity"][1] == pytest.approx(20.0, abs=0.05) and imp["sparsity"][2] == pytest.approx(36.0, abs=0.05)
    # the training-points accounting travels with each point: the measured ratio to real IMP and the distillation cost
    dist = next(s for s in fig["series"] if s["source"] == "distilled.dm")
    drows = sorted((r for r in table if r["source"] == "distilled.dm"), key=lambda r: r["round"])
    assert dist["points_ratio"][2] == pytest.approx(rows[2]["training_points"] / drows[2]["training_points"])
    assert dist["distill_points"][2] == drows[2]["distill_points"] > 0
    assert dist["points_ratio_with_distilling"][2] == pytest.approx(
        rows[2]["training_points"] / (drows[2]["training_points"] + drows[2]["distill_points"])
    )
    assert imp["pairs"] == [len(table[0]["error_barriers"])] * 3


def test_surface_figure_equals_the_grid_and_marks_the_models(api, finished, run_dir):
    key = next(s["key"] for s in _stages(run_dir) if s["kind"] == "surface")
    stored = _arrays(run_dir / "stages" / key / "surface.npz")
    info = read_json(run_dir / "stages" / key / "stage.json")
    for encoding in ("typed", "list"):
        fig = api.get(f"/api/studies/{finished['id']}/figures/surface?stage={key}&encoding={encoding}").json()
        assert fig["stage"] == key and fig["split"] == "test"
        np.testing.assert_array_equal(decode(fig["x"]), stored["xs"].astype(np.float32))
        np.testing.assert_array_equal(decode(fig["loss"]), stored["loss_test"].T.astype(np.float32))  # rows follow y
        np.testing.assert_array_equal(decode(fig["error"]), stored["error_test"].T.astype(np.float32))
        assert fig["points"] == {k: [float(v[0]), float(v[1])] for k, v in info["points"].items()}
        assert set(fig["points"]) == {"rewind", "A", "B"}
    assert fig["loss_min"] == pytest.approx(float(np.nanmin(stored["loss_test"])))
    assert api.get(f"/api/studies/{finished['id']}/figures/surface?split=train").status_code == 404


def test_hessian_figure_equals_the_stage(api, finished, run_dir):
    key = next(s["key"] for s in _stages(run_dir) if s["kind"] == "hessian")
    stored = _arrays(run_dir / "stages" / key / "hessian.npz")
    info = read_json(run_dir / "stages" / key / "stage.json")
    fig = api.get(f"/api/studies/{finished['id']}/figures/hessian?bins=20").json()
    assert fig["stage"] == key
    assert fig["top_eigenvalues"] == info["top_eigenvalues"] and fig["trace"] == info["trace"]
    assert fig["trace_stderr"] == info["trace_stderr"] and fig["diagonal_stats"] == info["diagonal"]
    np.testing.assert_array_equal(decode(fig["density"]["values"]), stored["density"].astype(np.float32))
    hist = fig["diagonal_histogram"]
    counts = decode(hist["counts"])
    nonzero = int(np.count_nonzero(stored["diagonal"]))
    assert counts.sum() == hist["entries"] == nonzero and hist["zeros"] == stored["diagonal"].size - nonzero
    assert len(counts) == 20 and decode(hist["edges"]).shape == (21,)
    # the smoke MLP (Linear and ReLU only) gets the exact diagonal by the Gauss-Newton route, and the figure says so
    assert info["diagonal"]["method"] == "ggn-exact" and "diagonal_stderr" not in stored
    assert hist["label"] == "exact Hessian diagonal H_ii (GGN, exact for this network)"
    assert hist["estimate"] is False and hist["stderr"] is None
    assert api.get(f"/api/studies/{finished['id']}/figures/hessian?bins=0").status_code == 422


def test_hessian_figure_labels_each_diagonal_and_an_estimates_errors():
    diag = np.array([0.0, 1.0, 2.0, 4.0, 0.0])
    se = np.array([9.0, 0.1, 0.2, 0.6, 9.0])  # the pruned entries' values must not count
    about = {"method": "hutchinson", "samples": 30, "stderr_mean": 0.3, "stderr_median": 0.2}
    fig = figures.hessian("hessian/imp-k0-r2/k0/p0", {"diagonal": diag, "diagonal_stderr": se}, {"diagonal": about}, 4, "list")
    hist = fig["diagonal_histogram"]
    assert hist["estimate"] is True and hist["stderr"] == {"mean": pytest.approx(0.3), "median": pytest.approx(0.2)}
    assert hist["label"] == "Hutchinson estimate of H_ii, 30 probes, per-entry s.e. 0.2 (median)"
    mixed = {"method": "ggn+hvp-exact", "ggn_entries": 170, "hvp_entries": 184}
    assert figures.diagonal_label(mixed) == (
        "exact Hessian diagonal H_ii (GGN, exact there, for 170 weights; one Hessian-vector product each for 184)"
    )
    assert figures.diagonal_label({"method": "hvp-exact"}) == "exact Hessian diagonal H_ii (one Hessian-vector product per weight)"
    # stages written before the method was recorded: "exact" was one product per weight; an old estimate has no errors
    assert figures.diagonal_label({"method": "exact"}) == figures.diagonal_label({"method": "hvp-exact"})
    assert figures.diagonal_label({"method": "hutchinson"}) == "Hutchinson estimate of H_ii, per-entry s.e. not recorded"


def test_stage_info_and_figure_index(api, finished, run_dir):
    key = "copies/dense/k0/p0"
    assert api.get(f"/api/studies/{finished['id']}/stages/info?stage={key}").json() == jsonsafe(
        read_json(run_dir / "stages" / key / "stage.json")
    )
    figs = api.get(f"/api/studies/{finished['id']}/figures").json()["figures"]
    assert set(figs) == {"interpolation", "sparsity", "surface", "hessian"}
    assert figs["surface"] == [s["key"] for s in _stages(run_dir) if s["kind"] == "surface"]


def test_every_stage_key_listed_comes_with_its_parse_key_reading(api, finished, run_dir):
    sid = finished["id"]
    index = api.get(f"/api/studies/{sid}/figures").json()
    assert set(index["stage_refs"]) == set(index["figures"])
    for name, keys in index["figures"].items():
        assert index["stage_refs"][name] == [parse_key(k).as_dict() for k in keys], name
    assert [r["kind"] for r in index["stage_refs"]["hessian"]] == ["hessian"] * len(index["figures"]["hessian"]) != []
    for name in ("surface", "hessian"):
        for key in index["figures"][name]:
            fig = api.get(f"/api/studies/{sid}/figures/{name}?stage={key}&encoding=list").json()
            assert fig["stage"] == key and fig["stage_ref"] == parse_key(key).as_dict()
    curves = api.get(f"/api/studies/{sid}/figures/interpolation").json()["curves"]
    assert sorted(c["stage"] for c in curves) == sorted(s["key"] for s in _stages(run_dir) if s["kind"] == "path")
    for c in curves:
        ref = parse_key(c["stage"])
        assert c["stage_ref"] == ref.as_dict()
        assert (c["mask"], c["source"], c["round"], c["rewind_step"], c["pair"]) == (ref.mask, ref.source, ref.round, ref.k, ref.pair)
    listed = api.get(f"/api/studies/{sid}/artifacts").json()
    for a in listed:
        assert a["stage_ref"] == (parse_key(a["stage"]).as_dict() if a["stage"] else None), a
    kinds = {a["stage_ref"]["kind"] for a in listed if a["stage_ref"]}
    assert {"init", "mask", "copies", "path", "surface", "hessian", "synthetic"} <= kinds
    assert {a["stage_ref"]["set"] for a in listed if a["stage_ref"] and a["stage_ref"]["kind"] == "synthetic"} != {None}


def test_result_rows_carry_the_reading_of_their_mask_id(api, finished):
    res = api.get(f"/api/studies/{finished['id']}/results").json()
    rows = res["table"] + res["analysis"]
    assert res["table"] and res["analysis"]
    for row in rows:
        source, k, rnd = parse_mask_id(row["mask"])
        assert row["mask_ref"] == {"mask": row["mask"], "source": source, "k": k, "round": rnd}, row
    # a table row's own round agrees with its mask id, and so does its source past round 0 (every source's round 0 is the
    # shared dense mask; the sweep's rows name the mask they rewind)
    assert all(r["mask_ref"]["round"] == r["round"] for r in res["table"] if r["source"] != "sweep")
    assert all(r["mask_ref"]["source"] == r["source"] for r in res["table"] if r["source"] != "sweep" and r["round"])
    assert any(r["mask_ref"]["source"] == "dense" and r["mask_ref"]["k"] is None for r in rows)


def test_openapi_documents_the_readings(api):
    schemas = api.get("/openapi.json").json()["components"]["schemas"]
    assert set(schemas["StageRefOut"]["properties"]) == {"key", "kind", "mask", "source", "round", "k", "pair", "set"}
    assert "stage_refs" in schemas["FiguresIndex"]["properties"] and "stage_ref" in schemas["ArtifactOut"]["properties"]
    assert "stage_ref" in schemas["StageFigureOut"]["properties"] and "stage_ref" in schemas["CurveOut"]["properties"]
    assert "mask_ref" in schemas["ResultRow"]["properties"]
