"""The study page's Sparsity tab: test accuracy and the error or loss barrier vs sparsity, one line per mask source and rewind step."""

from __future__ import annotations

from typing import Any

from dash import Input, Output, State, dcc, html
from plotly import graph_objects as go

from ... import figures, ui, urlstate
from ...callbacks import Callbacks
from ...client import ApiError, api
from ...ids import Shell, Study
from .index import available

callbacks = Callbacks()


def tab(q: dict[str, Any]) -> html.Section:
    """Return the tab's card; ?barrier= picks the barrier shown."""
    return ui.card(
        "Accuracy and barrier vs sparsity",
        html.Div(
            className="controls",
            children=[
                dcc.RadioItems(
                    id=Study.BARRIER,
                    options=[{"label": "error barrier", "value": "error_barrier"}, {"label": "loss barrier", "value": "loss_barrier"}],
                    value=urlstate.first(q, "barrier", "error_barrier"),
                    inline=True,
                ),
            ],
        ),
        html.Div(className="grid2", children=[ui.loading(ui.graph(Study.ACCURACY_GRAPH)), ui.loading(ui.graph(Study.BARRIER_GRAPH))]),
    )


@callbacks.callback(
    Output(Study.ACCURACY_GRAPH, "figure"),
    Output(Study.BARRIER_GRAPH, "figure"),
    Input(Study.INDEX, "data"),
    Input(Study.BARRIER, "value"),
    State(Study.ID, "data"),
    State(Shell.TOKEN, "data"),
)
def sparsity(index: dict[str, Any] | None, metric: str, study_id: str, token: str | None) -> tuple[go.Figure, go.Figure]:
    """Return accuracy vs sparsity and the chosen barrier vs sparsity (empty figures saying why when there is nothing yet)."""
    if not available(index, "sparsity"):
        msg = str(index["error"]) if index and index.get("error") else "no round has finished yet"
        return figures.empty(msg), figures.empty(msg)
    try:
        data = api(token).figure(study_id, "sparsity")
    except ApiError as err:
        return figures.empty(err.message), figures.empty(err.message)
    return figures.sparsity(data, "accuracy_mean"), figures.sparsity(data, metric)
