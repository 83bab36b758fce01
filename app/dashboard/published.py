"""A gallery entry's figure and its exports: the interactive figure, CSV of what it plots, standalone HTML, the reproducibility bundle."""

from __future__ import annotations

import csv
import io
import json
from importlib import metadata
from typing import Any

import numpy as np
import plotly.graph_objects as go

from . import figures
from .arrays import decode
from .client import Client

ARRAY_KIND = {"interpolation": "path", "surface": "surface", "hessian": "hessian"}


def figure_data(client: Client, entry: dict[str, Any]) -> dict[str, Any]:
    """Return the API's figure-ready JSON behind a gallery entry (a result entry shows the sparsity figure)."""
    name = entry.get("figure") or "sparsity"
    params = {"stage": entry["stage"]} if entry.get("stage") else {}
    return client.figure(entry["study_id"], name, **params)


def build(entry: dict[str, Any], data: dict[str, Any]) -> go.Figure:
    """Return the interactive figure of an entry from its data."""
    name = entry.get("figure") or "sparsity"
    title = entry.get("title")
    if name == "interpolation":
        fig = figures.interpolation(data.get("curves", []), "error", ("test",))
    elif name == "surface":
        fig = figures.contour(data, "loss")
    elif name == "hessian":
        fig = figures.spectrum(data)
    else:
        fig = figures.sparsity(data, "error_barrier")
    fig.update_layout(title=dict(text=title, x=0.01))
    return fig


def to_csv(entry: dict[str, Any], data: dict[str, Any]) -> str:
    """Return what the figure plots as CSV (long format: one row per point)."""
    out = io.StringIO()
    w = csv.writer(out)
    name = entry.get("figure") or "sparsity"
    if name == "interpolation":
        w.writerow(["stage", "source", "round", "rewind_step", "pair", "sparsity_pct", "split", "alpha", "error", "loss"])
        for c in data.get("curves", []):
            alphas = decode(c["alphas"])
            for split in c.get("error", {}):
                err, loss = decode(c["error"][split]), decode(c["loss"][split])
                for a, e, lo in zip(alphas, err, loss, strict=True):
                    w.writerow(
                        [
                            c["stage"],
                            c["source"],
                            c["round"],
                            c["rewind_step"],
                            c["pair"],
                            c.get("sparsity"),
                            split,
                            f"{a:.6g}",
                            f"{e:.6g}",
                            f"{lo:.6g}",
                        ]
                    )
    elif name == "surface":
        x, y, loss, err = decode(data["x"]), decode(data["y"]), decode(data["loss"]), decode(data["error"])
        w.writerow(["x", "y", f"loss_{data.get('split')}", f"error_{data.get('split')}"])
        for i, yy in enumerate(y):
            for j, xx in enumerate(x):
                w.writerow([f"{xx:.6g}", f"{yy:.6g}", f"{loss[i, j]:.6g}", f"{err[i, j]:.6g}"])
    elif name == "hessian":
        w.writerow(["quantity", "x", "value"])
        for i, ev in enumerate(data.get("top_eigenvalues") or []):
            w.writerow(["eigenvalue", i + 1, ev])
        w.writerow(["trace", "", data.get("trace")])
        if data.get("density"):
            for g, v in zip(decode(data["density"]["grid"]), decode(data["density"]["values"]), strict=True):
                w.writerow(["density", f"{g:.6g}", f"{v:.6g}"])
    else:
        w.writerow(["source", "rewind_step", "round", "sparsity_pct", "accuracy_mean", "error_barrier", "loss_barrier", "training_points"])
        for s in data.get("series", []):
            for i, r in enumerate(s["round"]):
                w.writerow(
                    [
                        s["source"],
                        s["rewind_step"],
                        r,
                        s["sparsity"][i],
                        s["accuracy_mean"][i],
                        s["error_barrier"][i],
                        s["loss_barrier"][i],
                        s["training_points"][i],
                    ]
                )
    return out.getvalue()


def to_npz(client: Client, entry: dict[str, Any], data: dict[str, Any]) -> bytes | None:
    """Return the entry's raw arrays as npz bytes, at the precision the study stored them; None for table figures.

    An interpolation entry overlays many paths: every path's arrays go into one file, named `<stage>/<array>`
    ("/" in stage keys becomes "__"), with `stages` listing the stage keys in the figure's order.
    """
    kind = npz_kind(entry)
    if kind is None:
        return None
    if kind != "path":
        return client.arrays(entry["study_id"], kind, entry.get("stage"))
    merged: dict[str, Any] = {}  # Any: numpy's stubs would match **arrays against savez_compressed's allow_pickle
    stages = [c["stage"] for c in data.get("curves", [])]
    for stage in stages:
        with np.load(io.BytesIO(client.arrays(entry["study_id"], "path", stage)), allow_pickle=False) as z:
            for name in z.files:
                merged[f"{stage.replace('/', '__')}/{name}"] = z[name]
    merged["stages"] = np.asarray(stages, dtype=str)
    out = io.BytesIO()
    np.savez_compressed(out, **merged)
    return out.getvalue()


def to_html(fig: go.Figure) -> str:
    """Return the figure as one standalone HTML file (plotly.js inlined: opens offline)."""
    return fig.to_html(include_plotlyjs=True, full_html=True, config={"displaylogo": False})


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def bundle(client: Client, entry: dict[str, Any]) -> dict[str, Any]:
    """Return the reproducibility bundle of an entry: the study's config and run id, versions, seeds, and how to rerun it."""
    study = client.study(entry["study_id"])
    cfg = study.get("config") or {}
    manifest: dict[str, Any] = {}
    for a in client.artifacts(entry["study_id"]):
        if a["stage"] == "" and a["name"] == "manifest.json":
            manifest = json.loads(client.get_bytes(a["url"]))
    stage_seeds = None
    if entry.get("stage"):
        stage_seeds = client.stage_info(entry["study_id"], entry["stage"]).get("seeds")
    seeds = {
        "init": cfg.get("seed"),
        "data": (cfg.get("data") or {}).get("seed"),
        "pruning": (cfg.get("pruning") or {}).get("seed"),
        "copy_pairs": (cfg.get("stability") or {}).get("pairs"),
        "stage": stage_seeds,
    }
    return {
        "entry": {k: entry.get(k) for k in ("id", "title", "figure", "stage", "author", "tags", "notes", "created_at")},
        "study": {k: study.get(k) for k in ("id", "name", "run_id", "preset", "status", "created_at", "finished_at")},
        "config": cfg,
        "seeds": seeds,
        "versions": {"run": manifest.get("versions"), "dashboard": {p: _version(p) for p in ("dash", "plotly", "numpy", "httpx")}},
        "rerun": f"lmc run config.json   # with the 'config' object above saved as config.json; run id {study.get('run_id')}",
    }


def npz_kind(entry: dict[str, Any]) -> str | None:
    """Return which array endpoint holds an entry's raw arrays (path, surface or hessian), or None for table figures."""
    return ARRAY_KIND.get(entry.get("figure") or "")
