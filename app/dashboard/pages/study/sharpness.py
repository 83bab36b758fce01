"""The study page's sharpness tab: the Hessian diagonal of one common network at the weights each mask source removes in a
round, against random removals of the same per-layer counts (the API's sharpness figure)."""

from __future__ import annotations

from typing import Any

from dash import Input, Output, State, html
from plotly import graph_objects as go

from ... import palette, ui
from ...arrays import decode
from ...callbacks import Callbacks
from ...client import api
from ...figures import base_layout, empty, f32
from ...ids import Shell, Study
from .index import stage_dropdown, stage_figure, stage_keys, stage_options

callbacks = Callbacks()
STATISTICS = (("mean", "mean H_ii"), ("median", "median H_ii"), ("top_decile_fraction", "share in the top 10 %"))


def tab(q: dict[str, Any], index: dict[str, Any]) -> html.Section:
    """Return the tab's card; ?sharpness= restores the stage."""
    return ui.card(
        "Sharpness of the pruned weights",
        html.Div(
            className="controls",
            children=[html.Label(["stage", stage_dropdown(Study.SHARPNESS_STAGE, q, index, "sharpness")])],
        ),
        html.Div(id=Study.SHARPNESS_NUMBERS, className="numbers"),
        ui.loading(ui.graph(Study.SHARPNESS_GRAPH)),
        html.Div(id=Study.SHARPNESS_TABLE),
    )


def _rgba(hex_colour: str, alpha: float) -> str:
    h = hex_colour.lstrip("#")
    r, g, b = (int(h[i : i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r}, {g}, {b}, {alpha})"


def histogram(data: dict[str, Any]) -> go.Figure:
    """Return each source's share of removed weights per log10 H_ii bin, with its random-removal band (pointwise 95 %).

    Shares, not counts, so that sources removing different numbers of weights compare on one axis.
    """
    edges = decode(data.get("edges"), "float64")
    sources = [s for s in data.get("sources") or [] if s.get("removed") and s.get("counts") is not None]
    if edges.size < 2 or not sources:
        return empty("no source removed weights in this round")
    centres = f32((edges[:-1] + edges[1:]) / 2)
    fig = go.Figure()
    for s in sources:
        n, colour, name = float(s["removed"]), palette.colour(s["source"]), palette.label(s["source"])
        if s.get("band_low") is not None and s.get("band_high") is not None:
            lo, hi = decode(s["band_low"], "float64") / n, decode(s["band_high"], "float64") / n
            fig.add_trace(go.Scatter(x=centres, y=f32(hi), mode="lines", line=dict(width=0), showlegend=False, hoverinfo="skip"))
            fig.add_trace(
                go.Scatter(
                    x=centres,
                    y=f32(lo),
                    mode="lines",
                    line=dict(width=0),
                    fill="tonexty",
                    fillcolor=_rgba(colour, 0.15),
                    name=f"{name}: random removal, 95 %",
                    hoverinfo="skip",
                )
            )
        share = decode(s["counts"], "float64") / n
        fig.add_trace(
            go.Scatter(
                x=centres,
                y=f32(share),
                mode="lines+markers",
                line=dict(color=colour, shape="hvh"),
                name=f"{name} (n = {s['removed']})",
                hovertemplate="log10 H_ii ≈ %{x:.2f}<br>%{y:.1%} of removed weights<extra>" + name + "</extra>",
            )
        )
    fig.update_xaxes(title="log10 H_ii at the removed weights (H_ii ≤ 0 counted apart)")
    fig.update_yaxes(title="share of the source's removed weights", tickformat=".0%", rangemode="tozero")
    return base_layout(fig, height=400)


def _fmt(v: Any) -> str:
    return "–" if v is None else f"{v:.3g}"


def table(data: dict[str, Any]) -> html.Table:
    """Return one row per source and statistic: observed, the null's mean and 95 % interval, both one-sided p-values, n."""
    head = ["source", "statistic", "observed", "random: mean [95 %]", "p (sharper)", "p (flatter)", "removed n", "draws"]
    rows = []
    for s in data.get("sources") or []:
        for key, label in STATISTICS:
            stat = (s.get("statistics") or {}).get(key)
            if stat is None:
                cells = [palette.label(s["source"]), label, "–", "–", "–", "–", str(s.get("removed", 0)), "0"]
            else:
                lo, hi = stat["null_interval"]
                cells = [
                    palette.label(s["source"]),
                    label,
                    _fmt(stat["observed"]),
                    f"{_fmt(stat['null_mean'])} [{_fmt(lo)}, {_fmt(hi)}]",
                    _fmt(stat["p_greater"]),
                    _fmt(stat["p_less"]),
                    str(s["removed"]),
                    str(s["random_draws"]),
                ]
            rows.append(html.Tr([html.Td(c) for c in cells]))
    return html.Table(className="table", children=[html.Thead(html.Tr([html.Th(h) for h in head])), html.Tbody(rows)])


def numbers(data: dict[str, Any]) -> list[html.Span]:
    """Return what the diagonal is: exact or estimate, on which network, which examples and BatchNorm mode."""
    d = data.get("diagonal") or {}
    kind = f"Hutchinson estimate ({d.get('samples')} probes)" if d.get("estimate") else f"exact ({d.get('method', 'exact')})"
    return [
        html.Span(f"H_ii: {kind}, {d.get('coordinates', '?')} weights"),
        html.Span(f"on {data.get('reference_network', '?')}, copy {data.get('reference_copy', '?')}"),
        html.Span(f"{d.get('examples', '?')} training examples, BatchNorm {d.get('mode', '?')}"),
        html.Span(f"top-decile threshold H_ii > {_fmt(data.get('top_decile_threshold'))}"),
    ]


@callbacks.callback(
    Output(Study.SHARPNESS_STAGE, "options"),
    Output(Study.SHARPNESS_STAGE, "value"),
    Input(Study.INDEX, "data"),
    State(Study.SHARPNESS_STAGE, "value"),
    prevent_initial_call=True,
)
def choices(index: dict[str, Any] | None, stage: str | None) -> tuple[Any, Any]:
    """Return the sharpness stage choices, keeping the chosen stage while it exists."""
    keys = stage_keys(index, "sharpness")
    return stage_options(index, "sharpness"), stage if stage in keys else (keys[0] if keys else None)


@callbacks.callback(
    Output(Study.SHARPNESS_GRAPH, "figure"),
    Output(Study.SHARPNESS_NUMBERS, "children"),
    Output(Study.SHARPNESS_TABLE, "children"),
    Input(Study.SHARPNESS_STAGE, "value"),
    State(Study.ID, "data"),
    State(Shell.TOKEN, "data"),
)
def sharpness(stage: str | None, study_id: str, token: str | None) -> tuple[Any, Any, Any]:
    """Return the chosen stage's histogram with the random bands, what the diagonal is, and the statistics table."""
    data = stage_figure(api(token), study_id, "sharpness", stage)
    if isinstance(data, tuple):  # nothing to draw: an empty figure and why
        return data[0], data[2], ""
    return histogram(data), numbers(data), table(data)
