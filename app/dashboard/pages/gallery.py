"""Gallery page: the team's published figures as cards (PNG thumbnail or drawn preview, title, tags, notes, stars, author), filtered and searched."""

from __future__ import annotations

import dash
from dash import ALL, Input, Output, State, dcc, html, no_update

from .. import ui, urlstate
from ..client import ApiError

FIGURES = ("interpolation", "sparsity", "surface", "hessian")
SORTS = {"-created_at": "newest", "created_at": "oldest", "-stars": "most starred", "title": "title"}


def layout(**q) -> html.Div:
    """Return the gallery; ?q=, ?tag=, ?figure=, ?author=, ?sort= restore the filter."""
    return html.Div(className="gallery", children=[
        dcc.Store(id="ga-url"),
        dcc.Store(id="ga-rev", data=0),
        html.Div(className="page-head", children=[html.H1("Gallery"), html.Div(id="ga-count", className="meta")]),
        html.Div(className="controls", children=[
            dcc.Input(id="ga-q", value=urlstate.first(q, "q", ""), placeholder="search titles and notes", debounce=True, className="input-wide"),
            dcc.Input(id="ga-tag", value=urlstate.first(q, "tag", ""), placeholder="tag", debounce=True, className="input"),
            dcc.Input(id="ga-author", value=urlstate.first(q, "author", ""), placeholder="author", debounce=True, className="input"),
            dcc.Dropdown(id="ga-figure", options=list(FIGURES), value=urlstate.first(q, "figure"), placeholder="any figure", className="dd"),
            dcc.Dropdown(id="ga-sort", options=[{"label": v, "value": k} for k, v in SORTS.items()], value=urlstate.first(q, "sort", "-created_at"),
                         clearable=False, className="dd"),
        ]),
        ui.loading(html.Div(id="ga-cards", className="cards")),
    ])


def picture(e: dict) -> html.Img:
    """Return the card's picture: the PNG the publisher's browser rendered when there is one, else the SVG drawn from the data."""
    thumb = e.get("thumbnail")
    if thumb:
        # The ETag in the URL makes each picture its own URL: cached for good, and a replaced one is fetched anew.
        version = str(thumb.get("etag") or "").strip('"')
        return html.Img(src=f"/thumbnail/{e['id']}.png?v={version}", alt=f"thumbnail of {e['title']}", className="thumb thumb-png")
    return html.Img(src=f"/preview/{e['id']}.svg", alt=f"preview of {e['title']}", className="thumb")


def card(e: dict) -> html.Article:
    """Return one gallery card."""
    return html.Article(className="gcard", children=[
        dcc.Link(picture(e), href=f"/gallery/{e['id']}"),
        html.Div(className="gcard-body", children=[
            dcc.Link(e["title"], href=f"/gallery/{e['id']}", className="gcard-title"),
            html.Div([html.Span(e.get("figure") or e["kind"], className="tag tag-kind"), *[html.Span(t, className="tag") for t in e.get("tags", [])]]),
            html.P(e.get("notes") or "", className="gcard-notes"),
            html.Div(className="gcard-foot", children=[
                html.Span(f"by {e.get('author') or 'unknown'} · ", className="muted"),
                dcc.Link(e.get("study_name") or e["study_id"], href=f"/study/{e['study_id']}"),
                html.Span(f" · ★ {e.get('stars', 0)}", className="stars"),
                ui.edit_only(html.Button("unstar" if e.get("starred") else "star", id={"type": "ga-star", "id": e["id"], "on": not e.get("starred")},
                                         className="btn btn-small"), className="inline"),
            ]),
        ]),
    ])


def register(app, api) -> None:
    """Register the page and its callbacks."""
    dash.register_page(__name__, path="/gallery", layout=layout, title="Gallery · LMC Lab", name="Gallery")
    urlstate.sync(app, "ga-url", {"q": ("ga-q", "value"), "tag": ("ga-tag", "value"), "author": ("ga-author", "value"),
                                  "figure": ("ga-figure", "value"), "sort": ("ga-sort", "value")})

    @app.callback(Output("ga-cards", "children"), Output("ga-count", "children"),
                  Input("ga-q", "value"), Input("ga-tag", "value"), Input("ga-author", "value"), Input("ga-figure", "value"),
                  Input("ga-sort", "value"), Input("ga-rev", "data"), State("token", "data"))
    def cards(q, tag, author, figure, sort, _rev, token):
        try:
            page = api(token).gallery(q=q or None, tag=tag or None, author=author or None, figure=figure, sort=sort, limit=100)
        except ApiError as err:
            return ui.error(err.message), ""
        if not page["data"]:
            return ui.empty("nothing published matches; publish a figure from a study page"), "0 entries"
        return [card(e) for e in page["data"]], f"{page['count']} entries"

    @app.callback(Output("ga-rev", "data"), Input({"type": "ga-star", "id": ALL, "on": ALL}, "n_clicks"), State("ga-rev", "data"),
                  State("token", "data"), prevent_initial_call=True)
    def star(clicks, rev, token):
        if not any(clicks) or not isinstance(dash.ctx.triggered_id, dict):
            return no_update
        try:
            api(token).star(dash.ctx.triggered_id["id"], dash.ctx.triggered_id["on"])
        except ApiError:
            return no_update
        return (rev or 0) + 1
