"""Permalink of a gallery entry: the interactive figure, its story, and every export (PNG, SVG, HTML, CSV, npz, reproducibility bundle)."""

from __future__ import annotations

import json
from typing import Any

import dash
from dash import Input, Output, State, dcc, html

from .. import published, ui
from ..callbacks import Callbacks
from ..client import ApiError, api
from ..ids import Entry, Shell

PATH = "/gallery/<entry_id>"
callbacks = Callbacks()


def layout(entry_id: str = "", **_q) -> html.Div:
    """Return the permalink page of gallery entry `entry_id`."""
    return html.Div(
        className="entry",
        children=[
            dcc.Store(id=Entry.ID, data=entry_id),
            dcc.Download(id=Entry.DOWNLOAD),
            html.Div(
                className="page-head",
                children=[
                    html.Div([html.H1(id=Entry.TITLE, children="Gallery entry"), html.Div(id=Entry.META, className="meta")]),
                    dcc.Link("← gallery", href="/gallery", className="btn btn-ghost"),
                ],
            ),
            html.Div(id=Entry.ERROR),
            ui.card("Figure", ui.loading(ui.graph(Entry.GRAPH)), html.P(id=Entry.NOTES, className="notes")),
            ui.card(
                "Export",
                html.Div(
                    className="exports",
                    children=[
                        html.Button("PNG", id=Entry.PNG, className="btn"),
                        html.Button("SVG", id=Entry.SVG, className="btn"),
                        html.Button("HTML (standalone)", id=Entry.HTML, className="btn"),
                        html.Button("CSV", id=Entry.CSV, className="btn"),
                        html.Button("npz", id=Entry.NPZ, className="btn"),
                        html.Button("Reproducibility bundle (JSON)", id=Entry.BUNDLE, className="btn"),
                    ],
                ),
                html.Div(id=Entry.EXPORT_MSG),
                html.P(id=Entry.API_LINKS, className="hint"),
            ),
        ],
    )


def register(app: dash.Dash) -> None:
    """Register the page and install its callbacks on `app`."""
    dash.register_page(__name__, path_template=PATH, layout=layout, title="Gallery entry · LMC Lab", name="Entry")
    callbacks.install(app)


@callbacks.callback(
    Output(Entry.TITLE, "children"),
    Output(Entry.META, "children"),
    Output(Entry.GRAPH, "figure"),
    Output(Entry.NOTES, "children"),
    Output(Entry.ERROR, "children"),
    Output(Entry.API_LINKS, "children"),
    Input(Entry.ID, "data"),
    State(Shell.TOKEN, "data"),
)
def show(entry_id: str, token: str | None) -> tuple[Any, ...]:
    """Return the entry's title, tags and study, its interactive figure, notes, an error box, and links to its data in the API."""
    client = api(token)
    try:
        entry = client.entry(entry_id)
        data = published.figure_data(client, entry)
    except ApiError as err:
        from .. import figures

        return "Gallery entry", "", figures.empty("nothing to show"), "", ui.error(err.message), ""
    meta = [
        html.Span(entry.get("figure") or entry["kind"], className="tag tag-kind"),
        *[html.Span(t, className="tag") for t in entry["tags"]],
        html.Span(f"by {entry.get('author') or 'unknown'}"),
        html.Span(f"★ {entry['stars']}"),
        html.Span(["study ", dcc.Link(entry["study_name"], href=f"/study/{entry['study_id']}")]),
        html.Span(f"stage {entry['stage']}", className="mono") if entry.get("stage") else None,
    ]
    kind = published.npz_kind(entry)
    base = client.base_url.rstrip("/")
    links: list[Any] = [
        html.A(
            "figure JSON (API)",
            href=f"{base}/api/studies/{entry['study_id']}/figures/{entry.get('figure') or 'sparsity'}"
            + (f"?stage={entry['stage']}" if entry.get("stage") else ""),
            target="_blank",
        )
    ]
    if kind:
        links += [
            " · ",
            html.A(
                "npz (API)",
                href=f"{base}/api/studies/{entry['study_id']}/arrays/{kind}" + (f"?stage={entry['stage']}" if entry.get("stage") else ""),
            ),
        ]
    return entry["title"], meta, published.build(entry, data), entry.get("notes") or "", "", links


callbacks.clientside_callback(
    f"""function(png, svg) {{
        if (!png && !svg) return window.dash_clientside.no_update;
        const fmt = dash_clientside.callback_context.triggered_id === {json.dumps(Entry.SVG)} ? 'svg' : 'png';
        const gd = document.querySelector({json.dumps("#" + Entry.GRAPH + " .js-plotly-plot")});
        if (!gd) return 'the figure is not drawn yet';
        const name = (document.getElementById({json.dumps(Entry.TITLE)}).innerText || 'figure').replace(/[^a-z0-9]+/gi, '_');
        Plotly.downloadImage(gd, {{format: fmt, filename: name, scale: fmt === 'png' ? 2 : 1, """
    f"""width: gd.offsetWidth, height: gd.offsetHeight}});
        return '';
    }}""",
    Output(Entry.EXPORT_MSG, "children"),
    Input(Entry.PNG, "n_clicks"),
    Input(Entry.SVG, "n_clicks"),
    prevent_initial_call=True,
)


@callbacks.callback(
    Output(Entry.DOWNLOAD, "data"),
    Output(Entry.EXPORT_MSG, "children", allow_duplicate=True),
    Input(Entry.HTML, "n_clicks"),
    Input(Entry.CSV, "n_clicks"),
    Input(Entry.NPZ, "n_clicks"),
    Input(Entry.BUNDLE, "n_clicks"),
    State(Entry.ID, "data"),
    State(Shell.TOKEN, "data"),
    prevent_initial_call=True,
)
def export(h: int | None, c: int | None, n: int | None, b: int | None, entry_id: str, token: str | None) -> tuple[Any, Any]:
    """Return the download the clicked button asks for (standalone HTML, CSV, npz or the reproducibility bundle) and a message."""
    if not (h or c or n or b):
        return dash.no_update, dash.no_update
    client = api(token)
    what = dash.ctx.triggered_id
    try:
        entry = client.entry(entry_id)
        stem = f"lmc_{entry['study_id'][:8]}_{entry.get('figure') or 'result'}_{entry_id}"
        if what == Entry.BUNDLE:
            return dict(content=json.dumps(published.bundle(client, entry), indent=2, default=str), filename=f"{stem}_bundle.json"), ""
        data = published.figure_data(client, entry)
        if what == Entry.NPZ:
            blob = published.to_npz(client, entry, data)
            if blob is None:
                return dash.no_update, ui.error("this figure summarises tables; download its CSV instead", title="npz")
            return dcc.send_bytes(blob, f"{stem}.npz"), ""
        if what == Entry.CSV:
            return dict(content=published.to_csv(entry, data), filename=f"{stem}.csv"), ""
        return dict(content=published.to_html(published.build(entry, data)), filename=f"{stem}.html"), ""
    except ApiError as err:
        return dash.no_update, ui.error(err.message)
