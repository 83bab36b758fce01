"""The study page's Landscape tab: a 2-D loss surface through a pair of copies, as a contour and in 3-D, with a cursor
linked between the two."""

from __future__ import annotations

from typing import Any

from dash import Input, Output, Patch, State, dcc, html, no_update

from ... import figures, ui, urlstate
from ...callbacks import Callbacks
from ...client import api
from ...ids import Shell, Study
from .index import stage_dropdown, stage_figure

callbacks = Callbacks()


def tab(q: dict[str, Any], index: dict[str, Any]) -> html.Section:
    """Return the tab's card; ?surface=, ?sq=, ?log= restore the stage, quantity and scale."""
    return ui.card(
        "2-D loss landscape",
        html.Div(
            className="controls",
            children=[
                html.Label(["stage", stage_dropdown(Study.SURFACE_STAGE, q, index, "surface")]),
                html.Label(
                    [
                        "quantity",
                        dcc.RadioItems(
                            id=Study.SURFACE_QUANTITY, options=["loss", "error"], value=urlstate.first(q, "sq", "loss"), inline=True
                        ),
                    ]
                ),
                dcc.Checklist(
                    id=Study.LOG,
                    options=[{"label": "log scale", "value": "log"}],
                    value=["log"] if urlstate.first(q, "log") in ("log", "1") else [],
                    inline=True,
                ),
            ],
        ),
        html.Div(id=Study.SURFACE_MSG),
        html.Div(className="grid2", children=[ui.loading(ui.graph(Study.CONTOUR_GRAPH)), ui.loading(ui.graph(Study.SURFACE3D_GRAPH))]),
        html.P("Hover either plot: the red cross marks the same point on the other.", className="hint"),
    )


@callbacks.callback(
    Output(Study.CONTOUR_GRAPH, "figure"),
    Output(Study.SURFACE3D_GRAPH, "figure"),
    Output(Study.SURFACE_MSG, "children"),
    Input(Study.SURFACE_STAGE, "value"),
    Input(Study.SURFACE_QUANTITY, "value"),
    Input(Study.LOG, "value"),
    State(Study.ID, "data"),
    State(Shell.TOKEN, "data"),
)
def landscape(stage: str | None, quantity: str, log: list[str] | None, study_id: str, token: str | None) -> tuple[Any, Any, Any]:
    """Return the chosen stage's surface as a contour and in 3-D, and a line on its plane, split, grid and loss range."""
    data = stage_figure(api(token), study_id, "surface", stage)
    if isinstance(data, tuple):  # nothing to draw: the empty figures and why
        return data
    lg = "log" in (log or [])
    note = (
        html.Div(
            [
                f"plane: {data.get('plane')} · split: {data.get('split')} · {data.get('resolution')}×{data.get('resolution')} grid · "
                f"loss {data.get('loss_min'):.3g} to {data.get('loss_max'):.3g}",
                *off_plane(data),
            ],
            className="hint",
        )
        if data.get("loss_min") is not None
        else ""
    )
    return figures.contour(data, quantity, lg), figures.surface3d(data, quantity, lg), note


def off_plane(data: dict[str, Any]) -> list[Any]:
    """Return a line naming the models that lie off the plane (a four-solution plane's A', B') and how far, or nothing."""
    off = {name: r for name, r in (data.get("residual") or {}).items() if r and r > 1e-6}
    if not off:
        return []
    far = ", ".join(f"{name} {r:.2f}" for name, r in off.items())
    return [
        html.Br(),
        f"off the plane (distance from it / distance from the centre): {far}; these markers are their projections, "
        "and the surface there is not their loss",
    ]


@callbacks.callback(
    Output(Study.SURFACE3D_GRAPH, "figure", allow_duplicate=True), Input(Study.CONTOUR_GRAPH, "hoverData"), prevent_initial_call=True
)
def cursor_to_surface(hover: dict[str, Any] | None) -> Any:
    """Move the 3-D surface's cursor to the point hovered on the contour."""
    return cursor(hover, three_d=True)


@callbacks.callback(
    Output(Study.CONTOUR_GRAPH, "figure", allow_duplicate=True), Input(Study.SURFACE3D_GRAPH, "hoverData"), prevent_initial_call=True
)
def cursor_to_contour(hover: dict[str, Any] | None) -> Any:
    """Move the contour's cursor to the point hovered on the 3-D surface."""
    return cursor(hover, three_d=False)


def cursor(hover: dict[str, Any] | None, three_d: bool) -> Any:
    """Return a Patch moving the cursor trace (trace 2) to the hovered point of trace 0, or no_update."""
    # The hovered point of trace 0 carries x, y and z already: no round trip to the API on every mouse move.
    if not hover or not hover.get("points"):
        return no_update
    pt = hover["points"][0]
    if pt.get("curveNumber", 0) != 0 or "x" not in pt or "y" not in pt:
        return no_update
    patch = Patch()
    patch["data"][2]["x"] = [pt["x"]]
    patch["data"][2]["y"] = [pt["y"]]
    if three_d:
        patch["data"][2]["z"] = [pt.get("z")]
    return patch
