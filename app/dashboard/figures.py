"""Plotly figures from the API's figure-ready JSON: pure functions (JSON in, go.Figure out), no I/O.

Every array goes into the figure as a numpy float32 array, so plotly serialises it as a typed array
("bdata", base64) rather than a list of numbers: a 101x101 surface is 40 kB of base64 instead of ~200 kB of text.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from . import palette
from .arrays import decode, values

FONT = dict(family="system-ui, -apple-system, Segoe UI, Roboto, sans-serif", size=13)
SPARSITY_AXIS = dict(title="sparsity (% of weights pruned)", ticksuffix="%", rangemode="tozero")
ALPHA_AXIS = dict(title="interpolation coefficient α (0 = copy A, 1 = copy B)", range=[0, 1])
METRICS = {
    "accuracy_mean": ("test accuracy (%)", "%"),
    "error_barrier": ("error barrier (percentage points)", " pt"),
    "loss_barrier": ("loss barrier (cross-entropy, nats)", ""),
}
QUANTITY_AXIS = {"error": dict(title="error (%)", ticksuffix="%"), "loss": dict(title="loss (cross-entropy, nats)")}


def f32(seq: Any) -> np.ndarray:
    """Return `seq` as a float32 numpy array (what makes plotly emit a typed array)."""
    return np.asarray(seq, dtype=np.float32)


def base_layout(fig: go.Figure, title: str | None = None, height: int = 420) -> go.Figure:
    """Apply the house style: readable font, white background, legend above, room for axis titles."""
    fig.update_layout(
        template="plotly_white",
        font=FONT,
        height=height,
        margin=dict(l=70, r=20, t=60 if title else 30, b=60),
        legend=dict(orientation="h", yanchor="bottom", y=1.02, x=0),
        hovermode="closest",
        title=dict(text=title, x=0.01, font=dict(size=15)) if title else None,
    )
    return fig


def empty(message: str, height: int = 300) -> go.Figure:
    """Return a blank figure that says why there is nothing to draw."""
    fig = go.Figure()
    fig.add_annotation(text=message, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper", font=dict(size=14, color="#666"))
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return base_layout(fig, height=height)


# ---------------------------------------------------------------------------------------------- vs sparsity


def sparsity(
    data: dict[str, Any], metric: str = "error_barrier", study: str | None = None, index: int = 0, fig: go.Figure | None = None
) -> go.Figure:
    """Return accuracy or a barrier vs sparsity (in %), one line per mask source and rewind step, std as error bars."""
    title, suffix = METRICS[metric]
    fig = fig or go.Figure()
    for s in data.get("series", []):
        source, k = s["source"], s["rewind_step"]
        name = f"{palette.label(source)}, k={k}" + (f" · {study}" if study else "")
        std = s.get(f"{metric}_std")
        fig.add_trace(
            go.Scatter(
                x=values(s["sparsity"]),
                y=values(s[metric]),
                name=name,
                mode="lines+markers",
                legendgroup=source,
                line=dict(color=palette.colour(source), dash=palette.STUDY_DASHES[index % 4]),
                marker=dict(symbol=palette.STUDY_SYMBOLS[index % 4], size=8),
                error_y=dict(type="data", array=values(std), visible=True, thickness=1) if std and any(v for v in std if v) else None,
                customdata=values(s["round"]),
                text=_accounting(s, metric),
                hovertemplate=f"{name}<br>round %{{customdata:.0f}}<br>sparsity %{{x:.1f}}%<br>{title}: %{{y:.3g}}{suffix}"
                "%{text}<extra></extra>",
            )
        )
    fig.update_xaxes(**SPARSITY_AXIS)
    fig.update_yaxes(title=title, ticksuffix="%" if metric == "accuracy_mean" else None)
    if not fig.data:
        return empty("no rounds finished yet")
    return base_layout(fig)


def _accounting(s: dict[str, Any], metric: str) -> list[str]:
    """Return each point's hover lines: what the error bar is (over how many pairs) and the training-points accounting."""
    rounds = s.get("round") or []
    n = s.get("pairs") or [None] * len(rounds)
    std = s.get(f"{metric}_std") or [None] * len(rounds)
    out = []
    for i in range(len(rounds)):
        lines = []
        if metric != "accuracy_mean" and n[i]:
            lines.append(f"± {std[i]:.3g} (sd over n={n[i]} seed pairs)" if n[i] > 1 and std[i] is not None else f"n={n[i]} seed pair")
        points = (s.get("training_points") or [None] * len(rounds))[i]
        if points:
            distill = (s.get("distill_points") or [0] * len(rounds))[i]
            cost = " + unknown distilling (imported set)" if distill is None else (f" + {distill:,} distilling" if distill else "")
            lines.append(f"training points {points:,}{cost}")
        ratio = (s.get("points_ratio") or [None] * len(rounds))[i]
        if ratio:
            total = (s.get("points_ratio_with_distilling") or [None] * len(rounds))[i]
            with_cost = "unknown" if total is None else f"{total:.2f}x"
            lines.append(f"real IMP's points / these: {ratio:.1f}x measured ({with_cost} with distilling)")
        out.append("".join(f"<br>{line}" for line in lines))
    return out


# ---------------------------------------------------------------------------------------------- interpolation


def curve_label(c: dict[str, Any]) -> str:
    """Return a legend entry for one interpolation curve: source, round, sparsity, rewind step and pair."""
    sp = c.get("sparsity")
    sp_txt = f", {sp:.1f}% sparse" if isinstance(sp, (int, float)) else ""
    pair = f", pair {c['pair']}" if c.get("pair") else ""
    return f"{palette.label(c['source'])} r{c['round']}{sp_txt}, k={c['rewind_step']}{pair}"


def select_curves(
    curves: Sequence[dict[str, Any]],
    sources: Iterable[str] | None = None,
    rounds: Iterable[int] | None = None,
    rewind_steps: Iterable[int] | None = None,
) -> list[dict[str, Any]]:
    """Return the curves whose mask source, round and rewind step are among those asked (None = all)."""
    src, rnd, ks = (set(x) if x is not None else None for x in (sources, rounds, rewind_steps))
    return [
        c
        for c in curves
        if (src is None or c["source"] in src) and (rnd is None or c["round"] in rnd) and (ks is None or c["rewind_step"] in ks)
    ]


def interpolation(
    curves: Sequence[dict[str, Any]],
    quantity: str = "error",
    splits: Sequence[str] = ("test",),
    study: str | None = None,
    index: int = 0,
    fig: go.Figure | None = None,
) -> go.Figure:
    """Return error (%) or loss along the linear path between the two copies, one line per curve and split, overlaid."""
    fig = fig or go.Figure()
    for c in curves:
        for split in splits:
            arr = c.get(quantity, {}).get(split)
            if arr is None:
                continue
            y = decode(arr) * (100.0 if quantity == "error" else 1.0)
            name = curve_label(c) + f" · {split}" + (f" · {study}" if study else "")
            fig.add_trace(
                go.Scatter(
                    x=decode(c["alphas"]),
                    y=y.astype(np.float32),
                    name=name,
                    mode="lines",
                    legendgroup=c["source"],
                    line=dict(
                        color=palette.colour(c["source"]),
                        dash=palette.SPLIT_DASH.get(split, "solid") if index == 0 else palette.STUDY_DASHES[index % 4],
                        width=1.5 + 0.5 * c["round"] if c["round"] < 4 else 3.5,
                    ),
                    hovertemplate=f"{name}<br>α %{{x:.3f}}<br>{quantity} %{{y:.4g}}<extra></extra>",
                )
            )
    fig.update_xaxes(**ALPHA_AXIS)
    fig.update_yaxes(**QUANTITY_AXIS[quantity])
    if not fig.data:
        return empty("no interpolation curve matches the selection")
    base_layout(fig, height=480)
    # many curves: a legend to the side keeps the plot area the same size whatever the selection
    fig.update_layout(legend=dict(orientation="v", yanchor="top", y=1, x=1.02, font=dict(size=11)), margin=dict(r=10))
    return fig


# ---------------------------------------------------------------------------------------------- 2-D landscape


def surface_grid(data: dict[str, Any], quantity: str = "loss", log: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (x, y, z) float32 arrays of a surface; z rows follow y; error in %, log10 of z when `log`."""
    x, y, z = decode(data["x"]), decode(data["y"]), decode(data[quantity])
    if quantity == "error":
        z = z * 100.0
    if log:
        z = np.log10(np.clip(z, 1e-6, None))
    return x, y, z.astype(np.float32)


def z_title(quantity: str, log: bool) -> str:
    """Return the colour-bar title of a surface quantity."""
    base = "loss (nats)" if quantity == "loss" else "error (%)"
    return f"log10 {base}" if log else base


def _points(data: dict[str, Any]) -> dict[str, tuple[float, float]]:
    return {name: (p[0], p[1]) for name, p in (data.get("points") or {}).items()}


def _nearest_z(x: np.ndarray, y: np.ndarray, z: np.ndarray, px: float, py: float) -> float:
    return float(z[int(np.abs(y - py).argmin()), int(np.abs(x - px).argmin())])


POINT_STYLE = {"rewind": ("diamond", "#ffffff"), "A": ("circle", "#E69F00"), "B": ("circle", "#D55E00")}


def contour(
    data: dict[str, Any],
    quantity: str = "loss",
    log: bool = False,
    zrange: tuple[float, float] | None = None,
    title: str | None = None,
    showscale: bool = True,
) -> go.Figure:
    """Return the surface as a filled contour plot with the rewind point and both copies marked; trace 2 is the linked cursor."""
    x, y, z = surface_grid(data, quantity, log)
    zmin, zmax = zrange if zrange else (None, None)
    fig = go.Figure(
        go.Contour(
            x=x,
            y=y,
            z=z,
            colorscale=palette.SURFACE_SCALE,
            zmin=zmin,
            zmax=zmax,
            ncontours=25,
            showscale=showscale,
            colorbar=dict(title=dict(text=z_title(quantity, log), side="right")),
            hovertemplate="x %{x:.3g}<br>y %{y:.3g}<br>" + z_title(quantity, log) + " %{z:.4g}<extra></extra>",
        )
    )
    pts = _points(data)
    fig.add_trace(
        go.Scatter(
            x=f32([p[0] for p in pts.values()]),
            y=f32([p[1] for p in pts.values()]),
            text=list(pts),
            mode="markers+text",
            textposition="top center",
            name="models",
            showlegend=False,
            hoverinfo="text",
            marker=dict(
                size=12,
                symbol=[POINT_STYLE.get(n, ("circle", "#fff"))[0] for n in pts],
                color=[POINT_STYLE.get(n, ("circle", "#fff"))[1] for n in pts],
                line=dict(color="#000", width=1.5),
            ),
            textfont=dict(color="#fff", size=13),
        )
    )
    fig.add_trace(
        go.Scatter(
            x=f32([]),
            y=f32([]),
            mode="markers",
            name="cursor",
            showlegend=False,
            hoverinfo="skip",
            marker=dict(size=14, symbol="x-thin", line=dict(color="#ff2d55", width=3)),
        )
    )
    fig.update_xaxes(title="direction 1 (plane coordinate, parameter-space units)", constrain="domain")
    fig.update_yaxes(title="direction 2 (plane coordinate)", scaleanchor="x")
    return base_layout(fig, title, height=480)


def surface3d(
    data: dict[str, Any],
    quantity: str = "loss",
    log: bool = False,
    zrange: tuple[float, float] | None = None,
    title: str | None = None,
    showscale: bool = True,
) -> go.Figure:
    """Return the surface in 3-D with the models' positions on it; trace 2 is the linked cursor."""
    x, y, z = surface_grid(data, quantity, log)
    zmin, zmax = zrange if zrange else (None, None)
    fig = go.Figure(
        go.Surface(
            x=x,
            y=y,
            z=z,
            colorscale=palette.SURFACE_SCALE,
            cmin=zmin,
            cmax=zmax,
            showscale=showscale,
            colorbar=dict(title=dict(text=z_title(quantity, log), side="right")),
            hovertemplate="x %{x:.3g}<br>y %{y:.3g}<br>%{z:.4g}<extra></extra>",
        )
    )
    pts = _points(data)
    on_surface = [_nearest_z(x, y, z, *p) for p in pts.values()]
    finite = z[np.isfinite(z)]
    # Lifted 3 % of the z range so the surface does not hide them; hover shows the surface's value.
    lift = 0.03 * float(finite.max() - finite.min()) if finite.size else 0.0
    fig.add_trace(
        go.Scatter3d(
            x=f32([p[0] for p in pts.values()]),
            y=f32([p[1] for p in pts.values()]),
            z=f32([v + lift for v in on_surface]),
            customdata=f32(on_surface),
            text=list(pts),
            hovertemplate="%{text}: x %{x:.3g}, y %{y:.3g}<br>%{customdata:.4g}<extra></extra>",
            mode="markers+text",
            name="models",
            marker=dict(size=5, color=[POINT_STYLE.get(n, ("circle", "#fff"))[1] for n in pts], line=dict(color="#000", width=1)),
            showlegend=False,
        )
    )
    fig.add_trace(
        go.Scatter3d(
            x=f32([]),
            y=f32([]),
            z=f32([]),
            mode="markers",
            name="cursor",
            showlegend=False,
            hoverinfo="skip",
            marker=dict(size=6, color="#ff2d55", symbol="x"),
        )
    )
    fig.update_layout(
        scene=dict(
            xaxis_title="direction 1",
            yaxis_title="direction 2",
            zaxis_title=z_title(quantity, log),
            aspectmode="manual",
            aspectratio=dict(x=1, y=1, z=0.6),
        )
    )
    return base_layout(fig, title, height=480)


def shared_range(datas: Sequence[dict[str, Any]], quantity: str = "loss", log: bool = False) -> tuple[float, float]:
    """Return one (zmin, zmax) over several surfaces, so that side-by-side surfaces share a colour scale."""
    lo, hi = np.inf, -np.inf
    for d in datas:
        z = surface_grid(d, quantity, log)[2]
        finite = z[np.isfinite(z)]
        if finite.size:
            lo, hi = min(lo, float(finite.min())), max(hi, float(finite.max()))
    return (lo, hi) if np.isfinite(lo) else (0.0, 1.0)


# ---------------------------------------------------------------------------------------------- Hessian


def analysis_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Return the analysis table's rows with the source and round of their mask (the API's reading of it, `mask_ref`)."""
    out = []
    for r in rows:
        ref = r.get("mask_ref") or {}
        out.append({**r, "source": ref.get("source", r.get("mask", "")), "round": ref.get("round", 0)})
    return out


def hessian_by_round(rows: Sequence[dict[str, Any]]) -> go.Figure:
    """Return lambda_max and the trace (± standard error) per round, one line per mask source (two panels)."""
    rows = [r for r in analysis_rows(rows) if r.get("lambda_max") is not None or r.get("trace") is not None]
    if not rows:
        return empty("no Hessian analysis finished yet")
    fig = make_subplots(rows=1, cols=2, subplot_titles=("top eigenvalue λ_max", "trace (Hutch++ ± s.e.)"))
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(r["source"], []).append(r)
    for source, rs in sorted(groups.items()):
        rs.sort(key=lambda r: r["round"])
        style = dict(color=palette.colour(source))
        x = f32([r["round"] for r in rs])
        fig.add_trace(
            go.Scatter(
                x=x,
                y=values([r.get("lambda_max") for r in rs]),
                name=palette.label(source),
                legendgroup=source,
                mode="lines+markers",
                line=style,
            ),
            row=1,
            col=1,
        )
        fig.add_trace(
            go.Scatter(
                x=x,
                y=values([r.get("trace") for r in rs]),
                name=palette.label(source),
                legendgroup=source,
                showlegend=False,
                mode="lines+markers",
                line=style,
                error_y=dict(type="data", array=values([r.get("trace_stderr") for r in rs])),
            ),
            row=1,
            col=2,
        )
    fig.update_xaxes(title="pruning round", dtick=1)
    fig.update_yaxes(title="eigenvalue (loss curvature)", row=1, col=1)
    fig.update_yaxes(title="trace", row=1, col=2)
    base_layout(fig, height=380)
    fig.update_layout(legend=dict(orientation="h", yanchor="top", y=-0.2, x=0), margin=dict(b=90))
    return fig


def spectrum(
    data: dict[str, Any], title: str | None = None, colour: str | None = None, name: str = "density", fig: go.Figure | None = None
) -> go.Figure:
    """Return the SLQ spectral density (log scale) with the top eigenvalues as vertical marks."""
    fig = fig or go.Figure()
    density = data.get("density")
    if density:
        values = decode(density["values"])
        # Gaussian broadening leaves troughs many decades deep between Lanczos nodes; a floor six decades under the
        # peak keeps the log axis on the part of the spectrum that carries mass.
        floor = max(float(np.nanmax(values)) * 1e-6, 1e-30) if values.size and np.isfinite(values).any() else 1e-12
        fig.add_trace(
            go.Scatter(
                x=decode(density["grid"]),
                y=np.clip(values, floor, None).astype(np.float32),
                mode="lines",
                name=name,
                line=dict(color=colour or "#0072B2"),
                fill="tozeroy",
            )
        )
    for i, ev in enumerate(data.get("top_eigenvalues") or []):
        # only the largest is labelled: an annotation without text would read "new text"
        label = {"annotation_text": "λ1", "annotation_position": "top right"} if i == 0 else {}
        fig.add_vline(x=ev, line=dict(color=colour or "#D55E00", dash="dot", width=1), **label)
    fig.update_xaxes(title="eigenvalue")
    fig.update_yaxes(title="spectral density (log scale)", type="log")
    if not fig.data:
        return empty("this Hessian stage has no spectral density (density_runs = 0)")
    return base_layout(fig, title, height=360)


def diagonal_histogram(data: dict[str, Any], title: str | None = None) -> go.Figure:
    """Return the histogram of the Hessian diagonal over unpruned weights (bars between the bin edges).

    The axis says what the diagonal is (the API's `label`: exact and by which route, or a Hutchinson estimate); an
    estimate also draws its median per-entry standard error as an error bar at the median bin, so its noise can be
    read against the spread of the histogram.
    """
    h = data.get("diagonal_histogram")
    if not h or not h.get("entries"):
        return empty("this Hessian stage has no diagonal")
    edges, counts = decode(h["edges"]), decode(h["counts"])
    centres = ((edges[:-1] + edges[1:]) / 2).astype(np.float32)
    label = h.get("label") or "Hessian diagonal H_ii"
    fig = go.Figure(
        go.Bar(
            x=centres,
            y=counts,
            width=f32(np.diff(edges)),
            marker_color="#56B4E9",
            name="weights",
            hovertemplate=("H_ii ≈ %{x:.3g} (estimated)" if h.get("estimate") else "H_ii = %{x:.3g}")
            + "<br>%{y:.0f} weights<extra></extra>",
        )
    )
    se = h.get("stderr")
    if h.get("estimate") and se and len(counts):
        cumulative = np.cumsum(counts)
        middle = int(np.searchsorted(cumulative, cumulative[-1] / 2))
        fig.add_trace(
            go.Scatter(
                x=[float(centres[middle])],
                y=[float(max(counts.max(), 1))],
                mode="markers",
                marker={"color": "#D55E00", "size": 7},
                error_x={"type": "constant", "value": float(se["median"]), "color": "#D55E00", "thickness": 2},
                name=f"±1 median per-entry s.e. ({se['median']:.2g})",
                hovertemplate=f"median per-entry standard error {se['median']:.3g} (mean {se['mean']:.3g})<extra></extra>",
            )
        )
    fig.update_xaxes(title=f"{label}; {h['entries']} unpruned weights, {h['zeros']} pruned left out")
    fig.update_yaxes(title="weights", type="log")
    return base_layout(fig, title, height=360)


# ---------------------------------------------------------------------------------------------- synthetic set


def synthetic_grid(images: np.ndarray, labels: np.ndarray, title: str | None = None, per_class: int = 4) -> go.Figure:
    """Return the synthetic set as an image grid (N, C, H, W) or, for signals (N, C, L), small line plots; one row per class."""
    classes = sorted({int(c) for c in labels.tolist()})
    if not classes:
        return empty("this synthetic set is empty")
    picks = {c: [i for i in range(len(labels)) if int(labels[i]) == c][:per_class] for c in classes}
    cols = max(len(v) for v in picks.values())
    fig = make_subplots(
        rows=len(classes), cols=cols, horizontal_spacing=0.01, vertical_spacing=0.01, row_titles=[f"class {c}" for c in classes]
    )
    signals = images.ndim == 3
    for r, c in enumerate(classes, start=1):
        for col, i in enumerate(picks[c], start=1):
            img = images[i]
            if signals:
                fig.add_trace(
                    go.Scatter(
                        y=f32(img[0]),
                        mode="lines",
                        line=dict(color=palette.colour("distilled." + str(c)), width=1.2),
                        showlegend=False,
                        hoverinfo="skip",
                    ),
                    row=r,
                    col=col,
                )
            elif img.shape[0] == 1:
                fig.add_trace(go.Heatmap(z=f32(img[0][::-1]), colorscale="Greys", showscale=False, hoverinfo="skip"), row=r, col=col)
            else:
                rgb = np.moveaxis(img[:3], 0, -1)
                rgb = (255 * (rgb - rgb.min()) / (np.ptp(rgb) or 1)).astype(np.uint8)
                fig.add_trace(go.Image(z=rgb, hoverinfo="skip"), row=r, col=col)
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    fig.for_each_annotation(lambda a: a.update(textangle=0, xanchor="left", font=dict(size=11)) if a.text.startswith("class") else None)
    return base_layout(fig, title, height=max(260, 70 * len(classes)))


# ---------------------------------------------------------------------------------------------- figure JSON helpers


def has_typed_arrays(fig: go.Figure) -> bool:
    """Return True when the figure's JSON carries at least one typed array (the bench and tests check this)."""
    return '"bdata"' in fig.to_json()
