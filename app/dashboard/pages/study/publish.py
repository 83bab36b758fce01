"""Publishing a study's figure to the gallery: the card under the tabs, the browser rendering the PNG, the server posting the entry."""

from __future__ import annotations

import json
from typing import Any

from dash import Input, Output, State, dcc, html, no_update

from ... import ui
from ...callbacks import Callbacks
from ...client import ApiError, api
from ...ids import Shell, Study
from .index import publishable

# The graph holding each publishable figure on this page (rendered as the gallery card's PNG), and the picture's size.
THUMB_GRAPHS = {
    "sparsity": Study.BARRIER_GRAPH,
    "interpolation": Study.INTERP_GRAPH,
    "surface": Study.CONTOUR_GRAPH,
    "hessian": Study.SPECTRUM_GRAPH,
}
THUMB_SIZE = (480, 320)
callbacks = Callbacks()


def card(index: dict[str, Any]) -> html.Div:
    """Return the publishing card (shown to visitors with a token), its figure choices from the prefetched index."""
    return ui.edit_only(
        ui.card(
            "Publish to the gallery",
            html.Div(
                className="form-row",
                children=[
                    html.Label(
                        [
                            "figure",
                            dcc.Dropdown(id=Study.PUB_FIGURE, options=publishable(index), placeholder="which figure", className="dd"),
                        ]
                    ),
                    html.Label(
                        [
                            "title",
                            dcc.Input(id=Study.PUB_TITLE, type="text", placeholder="a title for the gallery card", className="input-wide"),
                        ]
                    ),
                    html.Label(["tags", dcc.Input(id=Study.PUB_TAGS, type="text", placeholder="comma,separated", className="input")]),
                ],
            ),
            dcc.Textarea(id=Study.PUB_NOTES, placeholder="notes (what the figure shows, what to look at)", className="textarea"),
            html.Button("Publish", id=Study.PUB_GO, className="btn btn-primary"),
            html.Div(id=Study.PUB_MSG),
            html.P("Surface and Hessian figures publish the stage selected above.", className="hint"),
        )
    )


# Publishing, step 1 in the browser: render the chosen figure (Plotly.toImage, PNG, THUMB_SIZE) for the gallery card.
# The figure comes from its graph's `figure` property, so it renders even when its tab is not shown. The request, with
# the picture as a data URL, goes through a data-* property of the message box, which carries it to step 2 on the
# server. A figure not drawn yet, or one that fails to render, is published without a picture (the card draws a preview).
_NAMES = list(THUMB_GRAPHS)
callbacks.clientside_callback(
    f"""async function(n, figure, ...figs) {{
        if (!n) return window.dash_clientside.no_update;
        const out = {{n: n, figure: figure || null, png: null, error: null}};
        const fig = figure ? figs[{json.dumps(_NAMES)}.indexOf(figure)] : null;
        if (fig && fig.data && fig.data.length && window.Plotly) {{
            const [w, h] = [{THUMB_SIZE[0]}, {THUMB_SIZE[1]}];
            try {{
                out.png = await window.Plotly.toImage({{data: fig.data, layout: Object.assign({{}}, fig.layout, {{width: w, height: h}})}},
                                                      {{format: 'png', width: w, height: h}});
            }} catch (e) {{
                out.error = String(e);
            }}
        }}
        return JSON.stringify(out);
    }}""",
    Output(Study.PUB_MSG, "data-request"),
    Input(Study.PUB_GO, "n_clicks"),
    State(Study.PUB_FIGURE, "value"),
    *[State(THUMB_GRAPHS[name], "figure") for name in _NAMES],
    prevent_initial_call=True,
)


@callbacks.callback(
    Output(Study.PUB_MSG, "children"),
    Input(Study.PUB_MSG, "data-request"),
    State(Study.PUB_TITLE, "value"),
    State(Study.PUB_TAGS, "value"),
    State(Study.PUB_NOTES, "value"),
    State(Study.SURFACE_STAGE, "value"),
    State(Study.HESSIAN_STAGE, "value"),
    State(Study.ID, "data"),
    State(Shell.TOKEN, "data"),
    prevent_initial_call=True,
)
def publish(
    request: str | None,
    title: str | None,
    tags: str | None,
    notes: str | None,
    sstage: str | None,
    hstage: str | None,
    study_id: str,
    token: str | None,
) -> Any:
    """Step 2 on the server: publish the entry, with the browser's PNG as its thumbnail when step 1 made one; return a link to it."""
    try:
        req = json.loads(request) if request else None
    except ValueError:
        req = None
    if not req:
        return no_update
    figure = req.get("figure")
    if not figure:
        return ui.error("choose the figure to publish", title="Publish")
    body = {
        "study_id": study_id,
        "kind": "figure",
        "figure": figure,
        "title": (title or "").strip() or f"{figure} figure",
        "tags": [t.strip() for t in (tags or "").split(",") if t.strip()],
        "notes": notes or "",
    }
    if figure == "surface":
        body["stage"] = sstage
    elif figure == "hessian":
        body["stage"] = hstage
    if req.get("png"):
        body["thumbnail"] = req["png"]
    try:
        entry = api(token).publish(body)
    except ApiError as err:
        if not (body.get("thumbnail") and any(e.get("loc") == "thumbnail" for e in err.fields)):
            return ui.error(err.message)
        # The picture was refused (e.g. over the server's size limit): the entry is still worth publishing, with a drawn preview.
        body.pop("thumbnail")
        try:
            entry = api(token).publish(body)
        except ApiError as err2:
            return ui.error(err2.message)
        req["error"] = err.message
    note = (
        ""
        if entry.get("thumbnail")
        else f"  (no thumbnail: {req.get('error') or 'the figure is not drawn yet'}; the card shows a drawn preview)"
    )
    return ui.ok(
        [
            "published: ",
            dcc.Link(entry["title"], href=f"/gallery/{entry['id']}", id=Study.PUB_PERMALINK),
            html.Span(f"  (permalink /gallery/{entry['id']})", className="mono"),
            html.Span(note, className="hint"),
        ]
    )
