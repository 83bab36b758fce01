"""Figure builders: typed arrays reach the browser, one colour per mask source everywhere, sparsity in percent, units on axes."""

from __future__ import annotations

import base64
import json
import sys

import numpy as np
import pytest

from app.api.figures import encode
from app.dashboard import figures, palette, preview, schema_form
from app.dashboard.arrays import decode
from app.dashboard.pages.compare import diff_rows


def typed(a) -> dict:
    """Encode as the API does (the API's own encoder: plotly typed array, float32 little-endian)."""
    return encode(a, "typed")


def surface_payload(n: int = 101) -> dict:
    xs = np.linspace(-1, 1, n)
    loss = (xs[None, :] ** 2 + xs[:, None] ** 2 + 0.1).astype(np.float32)
    return {
        "stage": "surface/imp-k0-r2/k0/p0",
        "split": "test",
        "x": typed(xs),
        "y": typed(xs),
        "loss": typed(loss),
        "error": typed(loss / 3),
        "points": {"rewind": [0.0, 0.0], "A": [0.5, 0.0], "B": [0.2, 0.6]},
    }


def sparsity_payload() -> dict:
    def series(source, acc):
        return {
            "source": source,
            "rewind_step": 0,
            "round": [0, 1, 2],
            "sparsity": [0.0, 20.0, 36.0],
            "accuracy_mean": acc,
            "error_barrier": [5.0, 3.0, None],
            "error_barrier_std": [0.0, 0.5, 0.0],
            "loss_barrier": [0.1, 0.05, 0.02],
            "loss_barrier_std": [0, 0, 0],
            "training_points": [0, 10, 20],
        }

    return {"series": [series("imp", [97.0, 96.5, 96.0]), series("distilled.dm", [97.0, 96.0, 95.0]), series("random", [97.0, 95.0, 94.0])]}


def curves_payload() -> list[dict]:
    alphas = np.linspace(0, 1, 31)
    out = []
    for source in ("dense", "imp", "distilled.dm"):
        for rnd in (0, 1, 2) if source != "dense" else (0,):
            err = 0.2 + 0.1 * np.sin(np.pi * alphas) * (rnd + 1)
            out.append(
                {
                    "stage": f"path/{source}-k0-r{rnd}/k0/p0",
                    "mask": f"{source}-k0-r{rnd}",
                    "source": source,
                    "round": rnd,
                    "rewind_step": 0,
                    "pair": 0,
                    "sparsity": 100 * (1 - 0.8**rnd),
                    "alphas": typed(alphas),
                    "error": {"test": typed(err), "train": typed(err - 0.05)},
                    "loss": {"test": typed(err * 3), "train": typed(err * 2)},
                }
            )
    return out


def test_surface_101x101_goes_out_as_typed_arrays_not_lists():
    data = surface_payload(101)
    for fig in (figures.contour(data), figures.surface3d(data, log=True)):
        js = json.loads(fig.to_json())
        z = js["data"][0]["z"]
        assert isinstance(z, dict) and "bdata" in z, "z must be a plotly typed array"
        assert z["dtype"] == "f4" and z["shape"].replace(" ", "") == "101,101"
        assert isinstance(js["data"][0]["x"], dict) and "bdata" in js["data"][0]["x"]
        # 101 x 101 float32 = 40,804 bytes, base64 ~54 kB; a list of numbers would be several times larger
        assert len(fig.to_json()) < 120_000
    assert figures.has_typed_arrays(figures.contour(data))


def test_surface_orientation_and_log_scale():
    data = surface_payload(11)
    _, _, z = figures.surface_grid(data, "loss", log=False)
    assert z.dtype == np.float32 and z.shape == (11, 11)
    _, _, zl = figures.surface_grid(data, "loss", log=True)
    np.testing.assert_allclose(zl, np.log10(z), rtol=1e-5)
    _, _, ze = figures.surface_grid(data, "error")
    np.testing.assert_allclose(ze, decode(data["error"]) * 100, rtol=1e-6)  # error shown in %
    fig = figures.surface3d(data, log=True)
    assert "log10" in fig.layout.scene.zaxis.title.text


def test_models_marked_and_cursor_trace_ready():
    fig = figures.contour(surface_payload(21))
    assert list(fig.data[1].text) == ["rewind", "A", "B"]
    assert fig.data[2].name == "cursor" and len(fig.data[2].x) == 0
    s3 = figures.surface3d(surface_payload(21))
    z = decode(s3.data[0].z)
    for px, py, pz, true_z in zip(
        decode(s3.data[1].x), decode(s3.data[1].y), decode(s3.data[1].z), decode(s3.data[1].customdata), strict=True
    ):
        i, j = np.abs(decode(s3.data[0].y) - py).argmin(), np.abs(decode(s3.data[0].x) - px).argmin()
        assert true_z == pytest.approx(z[i, j]), "hover shows the surface's value at the model"
        assert pz > true_z, "the marker sits above the surface, not hidden under it"


def test_shared_colour_scale_spans_every_surface():
    a, b = surface_payload(11), surface_payload(11)
    b["loss"] = typed(decode(b["loss"]) * 10)
    lo, hi = figures.shared_range([a, b])
    assert lo == pytest.approx(0.1, rel=1e-5) and hi == pytest.approx(21.0, rel=1e-5)
    f1, f2 = figures.contour(a, zrange=(lo, hi)), figures.contour(b, zrange=(lo, hi))
    assert (f1.data[0].zmin, f1.data[0].zmax) == (f2.data[0].zmin, f2.data[0].zmax) == (lo, hi)


def test_one_colour_per_mask_source_on_every_figure():
    sp = figures.sparsity(sparsity_payload(), "error_barrier")
    acc = figures.sparsity(sparsity_payload(), "accuracy_mean")
    interp = figures.interpolation(curves_payload(), "error", ("test", "train"))
    seen: dict[str, set[str]] = {}
    for fig in (sp, acc, interp):
        for tr in fig.data:
            seen.setdefault(tr.legendgroup, set()).add(tr.line.color)
    assert all(len(c) == 1 for c in seen.values()), seen
    assert {s: next(iter(c)) for s, c in seen.items()} == {s: palette.colour(s) for s in seen}
    assert len({palette.colour(s) for s in ("dense", "imp", "random", "distilled.dm", "subset.dm")}) == 5
    assert palette.colour("distilled.mtt") == palette.colour("distilled.mtt")  # stable, not random per process


def test_sparsity_axis_in_percent_with_units():
    fig = figures.sparsity(sparsity_payload(), "error_barrier")
    assert fig.layout.xaxis.ticksuffix == "%"
    assert "%" in fig.layout.xaxis.title.text
    assert "points" in fig.layout.yaxis.title.text
    assert np.nanmax(np.asarray(fig.data[0].x, dtype=float)) == pytest.approx(36.0)  # percent, not a fraction
    interp = figures.interpolation(curves_payload(), "error")
    assert interp.layout.yaxis.ticksuffix == "%" and np.nanmax(np.asarray(interp.data[0].y)) > 1  # error in %


def test_select_curves_filters_by_source_and_round():
    curves = curves_payload()
    chosen = figures.select_curves(curves, sources=["imp"], rounds=[2])
    assert [c["stage"] for c in chosen] == ["path/imp-k0-r2/k0/p0"]
    assert len(figures.select_curves(curves)) == len(curves)
    assert "matches" in figures.interpolation([], "loss").layout.annotations[0].text


def test_hessian_figures():
    grid = np.linspace(0, 2, 50)
    data = {
        "top_eigenvalues": [1.9, 1.2],
        "density": {"grid": typed(grid), "values": typed(np.exp(-grid))},
        "diagonal_histogram": {
            "edges": typed(np.linspace(0, 1, 6)),
            "counts": {"dtype": "i4", "bdata": base64.b64encode(np.arange(5, dtype="<i4").tobytes()).decode()},
            "entries": 10,
            "zeros": 3,
        },
    }
    spec = figures.spectrum(data)
    assert spec.layout.yaxis.type == "log" and len(spec.data[0].x) == 50
    # one dotted mark per top eigenvalue; only the largest is labelled (an empty label would read "new text")
    assert sorted(sh.x0 for sh in spec.layout.shapes) == [1.2, 1.9]
    assert [a.text for a in spec.layout.annotations] == ["λ1"]
    deep = {"top_eigenvalues": [], "density": {"grid": typed(grid), "values": typed(np.where(grid < 1, 1.0, 1e-20))}}
    assert min(figures.spectrum(deep).data[0].y) == pytest.approx(1e-6), "troughs are floored six decades under the peak"
    hist = figures.diagonal_histogram(data)
    assert list(hist.data[0].y) == [0, 1, 2, 3, 4] and len(hist.data) == 1
    assert hist.layout.xaxis.title.text.startswith("Hessian diagonal H_ii;")  # no label from the API: no claim either way
    exact = {**data["diagonal_histogram"], "label": "exact Hessian diagonal H_ii (GGN, exact for this network)", "estimate": False}
    hist = figures.diagonal_histogram({**data, "diagonal_histogram": exact})
    assert (
        hist.layout.xaxis.title.text == "exact Hessian diagonal H_ii (GGN, exact for this network); 10 unpruned weights, 3 pruned left out"
    )
    assert "≈" not in hist.data[0].hovertemplate and len(hist.data) == 1
    # an estimate says so and draws its median per-entry standard error at the median bin (counts 0..4: the 4th bin)
    label = "Hutchinson estimate of H_ii, 30 probes, per-entry s.e. 0.05 (median)"
    estimate = {**data["diagonal_histogram"], "label": label, "estimate": True, "stderr": {"mean": 0.07, "median": 0.05}}
    hist = figures.diagonal_histogram({**data, "diagonal_histogram": estimate})
    assert hist.layout.xaxis.title.text.startswith(label) and "estimated" in hist.data[0].hovertemplate
    bar = hist.data[1]
    assert bar.error_x.value == pytest.approx(0.05) and bar.x[0] == pytest.approx(0.7)
    # analysis rows as the API sends them: each with the reading of its mask id (mask_ref), which the figure goes by
    rounds = figures.hessian_by_round(
        [
            {
                "mask": "imp-k0-r1",
                "mask_ref": {"mask": "imp-k0-r1", "source": "imp", "k": 0, "round": 1},
                "lambda_max": 2.0,
                "trace": 10.0,
                "trace_stderr": 0.5,
            },
            {
                "mask": "imp-k0-r2",
                "mask_ref": {"mask": "imp-k0-r2", "source": "imp", "k": 0, "round": 2},
                "lambda_max": 3.0,
                "trace": 12.0,
                "trace_stderr": 0.5,
            },
        ]
    )
    assert list(rounds.data[0].x) == [1, 2] and rounds.data[0].line.color == palette.colour("imp")


def test_synthetic_grid_images_and_signals():
    signals = figures.synthetic_grid(np.random.default_rng(0).normal(size=(20, 1, 40)).astype(np.float32), np.repeat(np.arange(10), 2))
    assert len(signals.data) == 20 and signals.data[0].type == "scatter"
    images = figures.synthetic_grid(np.zeros((4, 1, 8, 8), np.float32), np.array([0, 0, 1, 1]))
    assert images.data[0].type == "heatmap"


def test_schema_form_round_trip():
    schema = {
        "$defs": {
            "Train": {
                "properties": {
                    "epochs": {"anyOf": [{"type": "integer", "exclusiveMinimum": 0}, {"type": "null"}], "default": 20},
                    "optimizer": {"enum": ["sgd", "adam"], "default": "sgd", "type": "string"},
                    "milestones": {"type": "array", "items": {"type": "number"}},
                }
            }
        },
        "properties": {"name": {"type": "string", "default": "study"}, "train": {"$ref": "#/$defs/Train"}},
    }
    cfg = {"name": "s", "train": {"epochs": 20, "optimizer": "sgd", "milestones": [1.0]}}
    fs = {f.path: f for f in schema_form.fields(schema, cfg)}
    assert fs["train.epochs"].kind == "integer" and fs["train.epochs"].nullable
    assert fs["train.optimizer"].kind == "enum" and fs["train.optimizer"].options == ["sgd", "adam"]
    assert fs["train.milestones"].kind == "json"
    values = {p: schema_form.parse(f.kind, schema_form.show(f.kind, f.value)) for p, f in fs.items()}
    assert schema_form.nest(values) == cfg
    values["train.epochs"] = 5
    assert schema_form.overrides(cfg, values) == {"train.epochs": 5}
    with pytest.raises(ValueError, match="JSON"):
        schema_form.parse("json", "[1,")


def test_estimate_counts_epochs_rounds_sources():
    est = schema_form.estimate(
        {
            "train": {"epochs": 20},
            "pruning": {"mask_sources": ["dense", "imp", "random"], "rounds": 2, "rewind_steps": [0]},
            "stability": {"pairs": [[1, 2]]},
        }
    )
    assert (est["epochs"], est["rounds"], est["mask_sources"]) == (20, 2, 2)
    assert est["copy_trainings"] == 2 * (1 + 2 * 2)


def test_config_diff():
    rows = diff_rows([{"a": 1, "b": {"c": 2}}, {"a": 1, "b": {"c": 3}}], ["x", "y"], only_differences=True)
    assert [r["field"] for r in rows] == ["b.c"]
    assert len(diff_rows([{"a": 1}, {"a": 1}], ["x", "y"], only_differences=False)) == 1


def test_previews_are_svg_without_a_browser():
    svg = preview.svg({"figure": "surface"}, surface_payload(101))
    assert svg.startswith("<svg") and svg.count("<rect") <= 2 + preview.MAX_CELLS**2
    assert "<polyline" in preview.svg({"figure": "interpolation"}, {"curves": curves_payload()})
    assert "no preview" in preview.placeholder()


def test_dashboard_imports_no_torch_nor_lmc_core():
    import subprocess

    code = (
        "import sys; from app.dashboard import create_dash; create_dash('http://127.0.0.1:1'); "
        "bad = [m for m in sys.modules if m == 'torch' or m.startswith('torch.') or m.startswith('lmc_core')]; print(bad); assert not bad"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


def test_interpolation_npz_holds_every_path_at_stored_precision():
    import io

    from app.dashboard import published

    paths = {}
    for i, stage in enumerate(("path/imp-k0-r1/k0/p0", "path/random-k0-r1/k0/p0")):
        alphas = np.linspace(0, 1, 31)
        paths[stage] = {"alphas": alphas, "error_test": np.float64(0.1 * (i + 1)) + np.sin(np.pi * alphas) / 3}

    class FakeClient:
        def arrays(self, study_id, kind, stage=None):
            assert kind == "path" and stage in paths, "each path is fetched from the API by its own stage key"
            buf = io.BytesIO()
            np.savez(buf, **paths[stage])
            return buf.getvalue()

    entry = {"study_id": "s1", "figure": "interpolation"}
    data = {"curves": [{"stage": k} for k in paths]}
    with np.load(io.BytesIO(published.to_npz(FakeClient(), entry, data)), allow_pickle=False) as z:
        assert list(z["stages"]) == list(paths)
        for stage, arrays in paths.items():
            for name, a in arrays.items():
                got = z[f"{stage.replace('/', '__')}/{name}"]
                assert got.dtype == np.float64 and np.array_equal(got, a)
    assert published.to_npz(FakeClient(), {"study_id": "s1", "figure": "sparsity"}, {}) is None


def test_sparsity_hover_says_what_the_bar_is_and_shows_the_measured_ratio_and_the_distilling_cost():
    data = sparsity_payload()
    imp, dist, _ = data["series"]
    imp["pairs"] = dist["pairs"] = [2, 2, 2]
    dist.update(
        training_points=[0, 400, 800],
        distill_points=[0, 600, None],  # round 2 pretends an imported set of unreported cost
        points_ratio=[None, 10.0, 10.0],
        points_ratio_with_distilling=[None, 4.0, None],
    )
    fig = figures.sparsity(data, "error_barrier")
    imp_text, dist_text = fig.data[0].text, fig.data[1].text
    assert "± 0.5 (sd over n=2 seed pairs)" in imp_text[1]
    assert "training points 400 + 600 distilling" in dist_text[1]
    assert "real IMP's points / these: 10.0x measured (4.00x with distilling)" in dist_text[1]
    assert "unknown distilling (imported set)" in dist_text[2] and "(unknown with distilling)" in dist_text[2]
    assert "%{text}" in fig.data[1].hovertemplate
