"""Permalink of a gallery entry: the interactive figure, its story, and every export (PNG, SVG, HTML, CSV, npz, reproducibility bundle)."""

from __future__ import annotations

import json

import dash
from dash import Input, Output, State, dcc, html

from .. import published, ui
from ..client import ApiError

PATH = "/gallery/<entry_id>"


def layout(entry_id: str = "", **_q) -> html.Div:
    """Return the permalink page of gallery entry `entry_id`."""
    return html.Div(className="entry", children=[
        dcc.Store(id="en-id", data=entry_id),
        dcc.Download(id="en-download"),
        html.Div(className="page-head", children=[html.Div([html.H1(id="en-title", children="Gallery entry"), html.Div(id="en-meta", className="meta")]),
                                                  dcc.Link("← gallery", href="/gallery", className="btn btn-ghost")]),
        html.Div(id="en-error"),
        ui.card("Figure", ui.loading(ui.graph("en-graph")), html.P(id="en-notes", className="notes")),
        ui.card("Export", html.Div(className="exports", children=[
            html.Button("PNG", id="en-png", className="btn"),
            html.Button("SVG", id="en-svg", className="btn"),
            html.Button("HTML (standalone)", id="en-html", className="btn"),
            html.Button("CSV", id="en-csv", className="btn"),
            html.Button("npz", id="en-npz", className="btn"),
            html.Button("Reproducibility bundle (JSON)", id="en-bundle", className="btn"),
        ]), html.Div(id="en-export-msg"), html.P(id="en-api-links", className="hint")),
    ])


def register(app, api) -> None:
    """Register the page and its callbacks."""
    dash.register_page(__name__, path_template=PATH, layout=layout, title="Gallery entry · LMC Lab", name="Entry")

    @app.callback(Output("en-title", "children"), Output("en-meta", "children"), Output("en-graph", "figure"), Output("en-notes", "children"),
                  Output("en-error", "children"), Output("en-api-links", "children"), Input("en-id", "data"), State("token", "data"))
    def show(entry_id, token):
        client = api(token)
        try:
            entry = client.entry(entry_id)
            data = published.figure_data(client, entry)
        except ApiError as err:
            from .. import figures  # noqa: PLC0415
            return "Gallery entry", "", figures.empty("nothing to show"), "", ui.error(err.message), ""
        meta = [html.Span(entry.get("figure") or entry["kind"], className="tag tag-kind"), *[html.Span(t, className="tag") for t in entry["tags"]],
                html.Span(f"by {entry.get('author') or 'unknown'}"), html.Span(f"★ {entry['stars']}"),
                html.Span(["study ", dcc.Link(entry["study_name"], href=f"/study/{entry['study_id']}")]),
                html.Span(f"stage {entry['stage']}", className="mono") if entry.get("stage") else None]
        kind = published.npz_kind(entry)
        base = client.base_url.rstrip("/")
        links = [html.A("figure JSON (API)", href=f"{base}/api/studies/{entry['study_id']}/figures/{entry.get('figure') or 'sparsity'}"
                        + (f"?stage={entry['stage']}" if entry.get("stage") else ""), target="_blank")]
        if kind:
            links += [" · ", html.A("npz (API)", href=f"{base}/api/studies/{entry['study_id']}/arrays/{kind}" + (f"?stage={entry['stage']}" if entry.get("stage") else ""))]
        return entry["title"], meta, published.build(entry, data), entry.get("notes") or "", "", links

    app.clientside_callback(
        """function(png, svg) {
            if (!png && !svg) return window.dash_clientside.no_update;
            const fmt = dash_clientside.callback_context.triggered_id === 'en-svg' ? 'svg' : 'png';
            const gd = document.querySelector('#en-graph .js-plotly-plot');
            if (!gd) return 'the figure is not drawn yet';
            const name = (document.getElementById('en-title').innerText || 'figure').replace(/[^a-z0-9]+/gi, '_');
            Plotly.downloadImage(gd, {format: fmt, filename: name, scale: fmt === 'png' ? 2 : 1, width: gd.offsetWidth, height: gd.offsetHeight});
            return '';
        }""",
        Output("en-export-msg", "children"), Input("en-png", "n_clicks"), Input("en-svg", "n_clicks"), prevent_initial_call=True)

    @app.callback(Output("en-download", "data"), Output("en-export-msg", "children", allow_duplicate=True),
                  Input("en-html", "n_clicks"), Input("en-csv", "n_clicks"), Input("en-npz", "n_clicks"), Input("en-bundle", "n_clicks"),
                  State("en-id", "data"), State("token", "data"), prevent_initial_call=True)
    def export(h, c, n, b, entry_id, token):
        if not (h or c or n or b):
            return dash.no_update, dash.no_update
        client = api(token)
        what = dash.ctx.triggered_id
        try:
            entry = client.entry(entry_id)
            stem = f"lmc_{entry['study_id'][:8]}_{entry.get('figure') or 'result'}_{entry_id}"
            if what == "en-bundle":
                return dict(content=json.dumps(published.bundle(client, entry), indent=2, default=str), filename=f"{stem}_bundle.json"), ""
            data = published.figure_data(client, entry)
            if what == "en-npz":
                blob = published.to_npz(client, entry, data)
                if blob is None:
                    return dash.no_update, ui.error("this figure summarises tables; download its CSV instead", title="npz")
                return dcc.send_bytes(blob, f"{stem}.npz"), ""
            if what == "en-csv":
                return dict(content=published.to_csv(entry, data), filename=f"{stem}.csv"), ""
            return dict(content=published.to_html(published.build(entry, data)), filename=f"{stem}.html"), ""
        except ApiError as err:
            return dash.no_update, ui.error(err.message)
