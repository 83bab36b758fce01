"""Figure-ready JSON for the dashboard: interpolation curves, accuracy and barrier vs sparsity, surfaces, Hessian spectra.

Arrays go out as float32: either plotly's typed arrays ({"dtype": "f4", "bdata": base64, "shape": "r, c"}, which
plotly.js draws without parsing a list) or nested lists (null for NaN), as the request's `encoding` asks.

Stage keys and mask ids go out with their reading (`stage_ref`, `mask_ref`), parsed here by lmc_core's layout module,
the one description of the key grammar, so that no client parses a key.
"""

from __future__ import annotations

import base64
import json
from typing import Any, Literal

import numpy as np

from lmc_core.foundations.layout import parse_key, parse_mask_id

from .jsonsafe import jsonsafe

Encoding = Literal["typed", "list"]
PLOTLY_DTYPES = {
    "float32": "f4",
    "float64": "f8",
    "int32": "i4",
    "int16": "i2",
    "int8": "i1",
    "uint8": "u1",
    "uint16": "u2",
    "uint32": "u4",
}


def encode(values: Any, encoding: Encoding, dtype: str = "float32") -> Any:
    """Return `values` as a plotly typed array (little-endian `dtype`) or as nested lists with NaN as null."""
    arr = np.ascontiguousarray(np.asarray(values, dtype=dtype))
    if encoding == "list":
        return jsonsafe(arr.tolist())
    spec: dict[str, Any] = {
        "dtype": PLOTLY_DTYPES[dtype],
        "bdata": base64.b64encode(arr.astype(arr.dtype.newbyteorder("<")).tobytes()).decode(),
    }
    if arr.ndim > 1:
        spec["shape"] = ", ".join(str(n) for n in arr.shape)  # plotly's own spelling
    return spec


def decode(value: Any) -> np.ndarray:
    """Return the array that `encode` produced (either encoding); for clients and tests."""
    if isinstance(value, dict):
        dtype = {v: k for k, v in PLOTLY_DTYPES.items()}[value["dtype"]]
        arr = np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(dtype).newbyteorder("<"))
        shape = [int(n) for n in value["shape"].split(",")] if value.get("shape") else [arr.size]
        return arr.reshape(shape)
    return np.asarray([np.nan if v is None else v for v in np.ravel(np.asarray(value, dtype=object))], dtype=np.float64).reshape(
        np.shape(value)
    )


def stage_ref(key: str) -> dict[str, Any] | None:
    """Return what stage `key` names, {key, kind, mask, source, round, k, pair, set} (layout.parse_key; k is the rewind
    step, null where a kind has no such field), or None for '' (a run-level file) and keys outside the grammar."""
    try:
        return parse_key(key).as_dict()
    except ValueError:
        return None


def mask_ref(mid: str) -> dict[str, Any] | None:
    """Return what mask id `mid` names, {mask, source, k, round} (layout.parse_mask_id; the dense mask is
    ('dense', null, 0)), or None for an id outside the grammar."""
    try:
        source, k, rnd = parse_mask_id(mid)
    except ValueError:
        return None
    return {"mask": mid, "source": source, "k": k, "round": rnd}


def with_mask_refs(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Return summary-table rows with `mask_ref` added to every row that names a mask (the rows are not modified)."""
    return [{**r, "mask_ref": mask_ref(r["mask"])} if isinstance(r.get("mask"), str) else r for r in rows]


def interpolation(curves: list[tuple[str, dict[str, np.ndarray]]], table: list[dict[str, Any]], encoding: Encoding) -> dict[str, Any]:
    """Return one curve per path stage: alphas and, per split, error and loss along theta(alpha), with source, round and sparsity."""
    sparsity = {(row["mask"], row["rewind_step"]): row.get("sparsity") for row in table}
    out = []
    for key, arrays in curves:
        ref = stage_ref(key)
        if ref is None or ref["kind"] != "path":
            continue
        meta = {"mask": ref["mask"], "source": ref["source"], "round": ref["round"], "rewind_step": ref["k"], "pair": ref["pair"]}
        splits = sorted(k[len("error_") :] for k in arrays if k.startswith("error_"))
        out.append(
            {
                "stage": key,
                "stage_ref": ref,
                **meta,
                "sparsity": sparsity.get((meta["mask"], meta["rewind_step"])),
                "alphas": encode(arrays["alphas"], encoding),
                "error": {s: encode(arrays[f"error_{s}"], encoding) for s in splits},
                "loss": {s: encode(arrays[f"loss_{s}"], encoding) for s in splits},
            }
        )
    out.sort(key=lambda c: (c["source"] != "dense", c["source"], c["rewind_step"], c["round"], c["pair"]))
    return {"curves": out}


_SERIES_FIELDS = (
    "round",
    "sparsity",
    "accuracy_mean",
    "error_barrier",
    "error_barrier_std",
    "loss_barrier",
    "loss_barrier_std",
    "training_points",
    "distill_points",
    "points_ratio",
    "points_ratio_with_distilling",
)


def sparsity(table: list[dict[str, Any]]) -> dict[str, Any]:
    """Return accuracy and barriers vs sparsity, one series per (mask source, rewind step) in round order, and the rewind sweep."""
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    sweep: dict[str, list[dict[str, Any]]] = {}
    for row in table:
        if row.get("source") == "sweep":
            sweep.setdefault(row["mask"], []).append(row)
        else:
            groups.setdefault((row["source"], row["rewind_step"]), []).append(row)
    series = []
    for (source, k), rows in sorted(groups.items()):
        rows.sort(key=lambda r: r.get("round") or 0)
        series.append(
            {
                "source": source,
                "rewind_step": k,
                **{f: [r.get(f) for r in rows] for f in _SERIES_FIELDS},
                "pairs": [len(r.get("error_barriers") or []) for r in rows],  # n behind each mean and sd
            }
        )
    sweeps = []
    for mask, rows in sorted(sweep.items()):
        rows.sort(key=lambda r: r["rewind_step"])
        sweeps.append(
            {
                "mask": mask,
                "rewind_step": [r["rewind_step"] for r in rows],
                "error_barrier": [r.get("error_barrier") for r in rows],
                "error_barrier_std": [r.get("error_barrier_std") for r in rows],
                "loss_barrier": [r.get("loss_barrier") for r in rows],
                "accuracy_mean": [r.get("accuracy_mean") for r in rows],
            }
        )
    return jsonsafe({"series": series, "sweep": sweeps})


def surface(stage: str, arrays: dict[str, np.ndarray], info: dict[str, Any], split: str | None, encoding: Encoding) -> dict[str, Any] | str:
    """Return a loss surface in plotly's orientation (z rows follow y, columns follow x) with the models' positions, and for a
    four-solution plane how far off it each model lies (`residual`).

    lmc_core stores grids as [len(xs), len(ys)]; the transpose here is what a heatmap or contour wants.
    Returns a message (str) when `split` was not evaluated.
    """
    splits = sorted(k[len("loss_") :] for k in arrays if k.startswith("loss_"))
    split = split or info.get("split") or (splits[0] if splits else None)
    if split not in splits:
        return f"the surface of {stage} was evaluated on {', '.join(splits) or 'no split'}, not {split!r}"
    meta = json.loads(str(arrays["meta"])) if "meta" in arrays else {}
    points = meta.get("points") or info.get("points") or {}
    return jsonsafe(
        {
            "stage": stage,
            "stage_ref": stage_ref(stage),
            "split": split,
            "splits": splits,
            "plane": info.get("plane"),
            "span": info.get("span"),
            "resolution": info.get("resolution"),
            "loss_min": info.get("loss_min"),
            "loss_max": info.get("loss_max"),
            "x": encode(arrays["xs"], encoding),
            "y": encode(arrays["ys"], encoding),
            "loss": encode(np.asarray(arrays[f"loss_{split}"]).T, encoding),
            "error": encode(np.asarray(arrays[f"error_{split}"]).T, encoding),
            "points": {name: [float(p[0]), float(p[1])] for name, p in points.items()},
            # four_solution planes: each model's relative distance from the plane (A' and B' are drawn at their projections,
            # not where they are), the corners the paper draws them at, and the plane's values at each marker per split.
            "residual": info.get("residual"),
            "nominal": info.get("nominal"),
            "models": info.get("models"),
            "at_points": (info.get("at_points") or {}).get(split),
        }
    )


def diagonal_label(about: dict[str, Any] | None, stderr: dict[str, float] | None = None) -> str:
    """Say what a Hessian stage's diagonal is: exact (and by which route) or a Hutchinson estimate with its errors.

    `about` is the stage's `info["diagonal"]`; stages from before the method was recorded say "exact" (then one
    product per weight) or "hutchinson" (probes unknown).
    """
    about = about or {}
    method = about.get("method")
    if method == "ggn-exact":
        return "exact Hessian diagonal H_ii (GGN, exact for this network)"
    if method in ("hvp-exact", "exact"):
        return "exact Hessian diagonal H_ii (one Hessian-vector product per weight)"
    if method == "ggn+hvp-exact":
        return (
            f"exact Hessian diagonal H_ii (GGN, exact there, for {about.get('ggn_entries', '?')} weights; "
            f"one Hessian-vector product each for {about.get('hvp_entries', '?')})"
        )
    if method == "hutchinson":
        probes = f", {about['samples']} probes" if about.get("samples") else ""
        se = stderr or ({"median": about["stderr_median"]} if about.get("stderr_median") is not None else None)
        error = f", per-entry s.e. {se['median']:.2g} (median)" if se else ", per-entry s.e. not recorded"
        return f"Hutchinson estimate of H_ii{probes}{error}"
    return "Hessian diagonal H_ii"


def hessian(stage: str, arrays: dict[str, np.ndarray], info: dict[str, Any], bins: int, encoding: Encoding) -> dict[str, Any]:
    """Return top eigenvalues, trace with its standard error, the SLQ density and a histogram of the Hessian diagonal.

    The histogram counts the unpruned entries only: in the masked subspace a pruned weight's entry is exactly 0. It
    carries `label`, what the diagonal is (exact and how, or an estimate), and for an estimate `stderr`, the mean and
    median per-entry standard error over the same entries.
    """
    density = None
    if "density_grid" in arrays and "density" in arrays:
        density = {"grid": encode(arrays["density_grid"], encoding), "values": encode(arrays["density"], encoding)}
    histogram = None
    if "diagonal" in arrays:
        diag = np.asarray(arrays["diagonal"], dtype=np.float64)
        active = diag[(diag != 0) & np.isfinite(diag)]
        counts, edges = np.histogram(active, bins=bins) if active.size else (np.zeros(0, np.int64), np.zeros(0))
        stderr = None
        if "diagonal_stderr" in arrays:
            se = np.asarray(arrays["diagonal_stderr"], dtype=np.float64)[(diag != 0) & np.isfinite(diag)]
            stderr = {"mean": float(se.mean()), "median": float(np.median(se))} if se.size else None
        histogram = {
            "edges": encode(edges, encoding),
            "counts": encode(counts, encoding, dtype="int32"),
            "entries": int(active.size),
            "zeros": int(diag.size - active.size),
            "label": diagonal_label(info.get("diagonal"), stderr),
            "estimate": (info.get("diagonal") or {}).get("method") == "hutchinson",
            "stderr": stderr,
        }
    keep = (
        "top_eigenvalues",
        "eigen_residuals",
        "eigen_converged",
        "trace",
        "trace_stderr",
        "trace_hvps",
        "parameters",
        "active",
        "examples",
        "hvps",
        "diagonal",
        "mask",
        "k",
        "pair",
    )
    summary = {k: info[k] for k in keep if k in info}
    summary["diagonal_stats"] = summary.pop("diagonal", None)
    return jsonsafe({"stage": stage, "stage_ref": stage_ref(stage), **summary, "density": density, "diagonal_histogram": histogram})


SHARPNESS_DEFINITIONS = {
    "H_ii": "the diagonal of the Hessian of the mean cross-entropy of the common network on the batch `diagonal` describes",
    "removed": "weights the source kept at round r-1 and pruned at round r (its own two masks)",
    "mean": "mean H_ii over the removed weights",
    "median": "median H_ii over the removed weights",
    "top_decile_fraction": "fraction of the removed weights whose H_ii exceeds the common network's 90th percentile (top_decile_threshold)",
    "null": "random_draws random removals with the source's per-layer counts from the weights it kept at round r-1",
    "null_interval": "central 95 % of the statistic over the random removals",
    "p_greater": "one-sided permutation p-value that the removed weights are sharper than random: (1 + #{null >= observed}) / (1 + draws)",
    "p_less": "the same for flatter than random: (1 + #{null <= observed}) / (1 + draws)",
    "counts": "histogram of log10 H_ii over the removed weights with H_ii > 0 (nonpositive ones counted apart), shared edges",
    "band": "per-bin mean and pointwise central 95 % of the same histogram over the random removals",
}


def sharpness(stage: str, arrays: dict[str, np.ndarray], info: dict[str, Any], encoding: Encoding) -> dict[str, Any]:
    """Return, per mask source, the histogram of H_ii at its removed weights with the random-removal band, and its statistics.

    H_ii is read on one common network per (rewind step, round) (`reference_network`); `diagonal` says whether it is
    exact or an estimate, on which examples and in which BatchNorm mode. Every statistic carries its n (`removed`,
    `random_draws`), the null's mean and 95 % interval and both one-sided p-values; `definitions` says what each is.
    """
    sources = []
    for source in info.get("sources") or []:
        numbers = (info.get("removal") or {}).get(source) or {}
        entry: dict[str, Any] = {"source": source, **numbers, "mask_ref": mask_ref(str(numbers.get("mask", "")))}
        for name in ("counts", "band_mean", "band_low", "band_high"):
            key = f"{name}__{source}"
            entry[name] = encode(arrays[key], encoding, dtype="int32" if name == "counts" else "float32") if key in arrays else None
        sources.append(entry)
    keep = ("reference", "reference_mask", "reference_network", "reference_copy", "diagonal", "top_decile_threshold", "null_level")
    return jsonsafe(
        {
            "stage": stage,
            "stage_ref": stage_ref(stage),
            "round": info.get("round"),
            "rewind_step": info.get("k"),
            **{k: info.get(k) for k in keep},
            "edges": encode(arrays["edges"], encoding),
            "edges_scale": "log10 H_ii",
            "sources": sources,
            "definitions": SHARPNESS_DEFINITIONS,
        }
    )
