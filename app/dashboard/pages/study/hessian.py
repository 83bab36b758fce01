"""The study page's Hessian tab: lambda_max and the trace per round, and one stage's spectral density, diagonal and numbers."""

from __future__ import annotations

from typing import Any

from dash import Input, Output, State, html
from plotly import graph_objects as go

from ... import figures, palette, ui
from ...callbacks import Callbacks
from ...client import api
from ...ids import Shell, Study
from .index import stage_dropdown, stage_figure

callbacks = Callbacks()


def tab(q: dict[str, Any], index: dict[str, Any]) -> html.Section:
    """Return the tab's card; ?hessian= restores the stage."""
    return ui.card(
        "Hessian",
        ui.loading(ui.graph(Study.HESSIAN_ROUNDS_GRAPH)),
        html.Div(
            className="controls",
            children=[
                html.Label(["stage", stage_dropdown(Study.HESSIAN_STAGE, q, index, "hessian")]),
            ],
        ),
        html.Div(id=Study.HESSIAN_NUMBERS, className="numbers"),
        html.Div(className="grid2", children=[ui.loading(ui.graph(Study.SPECTRUM_GRAPH)), ui.loading(ui.graph(Study.DIAGONAL_GRAPH))]),
    )


@callbacks.callback(Output(Study.HESSIAN_ROUNDS_GRAPH, "figure"), Input(Study.RESULTS, "data"))
def hessian_rounds(results: dict[str, Any] | None) -> go.Figure:
    """Return lambda_max and the trace per round from the analysis table."""
    if not results or results.get("error"):
        return figures.empty((results or {}).get("error") or "no results yet")
    return figures.hessian_by_round(results.get("analysis") or [])


@callbacks.callback(
    Output(Study.SPECTRUM_GRAPH, "figure"),
    Output(Study.DIAGONAL_GRAPH, "figure"),
    Output(Study.HESSIAN_NUMBERS, "children"),
    Input(Study.HESSIAN_STAGE, "value"),
    State(Study.ID, "data"),
    State(Shell.TOKEN, "data"),
)
def hessian(stage: str | None, study_id: str, token: str | None) -> tuple[Any, Any, Any]:
    """Return the chosen stage's spectral density (in its mask source's colour), its diagonal's histogram and its numbers."""
    data = stage_figure(api(token), study_id, "hessian", stage)
    if isinstance(data, tuple):  # nothing to draw: the empty figures and why
        return data
    colour = palette.colour((data.get("stage_ref") or {}).get("source") or str(stage))
    return figures.spectrum(data, colour=colour), figures.diagonal_histogram(data), numbers(data)


def numbers(data: dict[str, Any]) -> list[html.Span]:
    """Return the stage's numbers, the diagonal's among them: what it is, and why products were used where they were."""
    eig = ", ".join(f"{v:.4g}" for v in data.get("top_eigenvalues") or [])
    nums = [
        html.Span(f"top eigenvalues: {eig or '–'}"),
        html.Span(f"trace: {data['trace']:.4g} ± {data.get('trace_stderr') or 0:.2g}" if data.get("trace") is not None else "trace: –"),
        html.Span(f"{data.get('active', '?')} of {data.get('parameters', '?')} weights unpruned"),
        html.Span(f"{data.get('hvps', '?')} Hessian-vector products on {data.get('examples', '?')} examples"),
    ]
    hist, about = data.get("diagonal_histogram") or {}, data.get("diagonal_stats") or {}
    if hist.get("label"):
        nums.append(html.Span(f"diagonal: {hist['label']}"))
    fallback = about.get("fallback") or {}
    if fallback and about.get("method") != "hutchinson":
        first, why = next(iter(fallback.items()))
        more = f" and {len(fallback) - 1} more parameters" if len(fallback) > 1 else ""
        nums.append(html.Span(f"products, not the GGN, for {first}{more}: {why}"))
    return nums
