"""Gallery page: the team's published figures as cards (PNG thumbnail or drawn preview, title, tags, notes, stars, author),
filtered and searched."""

from __future__ import annotations

from typing import Any

import dash
from dash import ALL, Input, Output, State, dcc, html, no_update

from .. import ui, urlstate
from ..callbacks import Callbacks
from ..client import ApiError, api
from ..ids import Gallery, Shell, pattern

FIGURES = ("interpolation", "sparsity", "surface", "hessian")
SORTS = {"-created_at": "newest", "created_at": "oldest", "-stars": "most starred", "title": "title"}
callbacks = Callbacks()


def layout(**q) -> html.Div:
    """Return the gallery; ?q=, ?tag=, ?figure=, ?author=, ?sort= restore the filter."""
    return html.Div(
        className="gallery",
        children=[
            dcc.Store(id=Gallery.URL),
            dcc.Store(id=Gallery.REV, data=0),
            html.Div(className="page-head", children=[html.H1("Gallery"), html.Div(id=Gallery.COUNT, className="meta")]),
            html.Div(
                className="controls",
                children=[
                    dcc.Input(
                        id=Gallery.QUERY,
                        value=urlstate.first(q, "q", ""),
                        placeholder="search titles and notes",
                        debounce=True,
                        className="input-wide",
                    ),
                    dcc.Input(id=Gallery.TAG, value=urlstate.first(q, "tag", ""), placeholder="tag", debounce=True, className="input"),
                    dcc.Input(
                        id=Gallery.AUTHOR, value=urlstate.first(q, "author", ""), placeholder="author", debounce=True, className="input"
                    ),
                    dcc.Dropdown(
                        id=Gallery.FIGURE,
                        options=list(FIGURES),
                        value=urlstate.first(q, "figure"),
                        placeholder="any figure",
                        className="dd",
                    ),
                    dcc.Dropdown(
                        id=Gallery.SORT,
                        options=[{"label": v, "value": k} for k, v in SORTS.items()],
                        value=urlstate.first(q, "sort", "-created_at"),
                        clearable=False,
                        className="dd",
                    ),
                ],
            ),
            ui.loading(html.Div(id=Gallery.CARDS, className="cards")),
        ],
    )


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
    return html.Article(
        className="gcard",
        children=[
            dcc.Link(picture(e), href=f"/gallery/{e['id']}"),
            html.Div(
                className="gcard-body",
                children=[
                    dcc.Link(e["title"], href=f"/gallery/{e['id']}", className="gcard-title"),
                    html.Div(
                        [
                            html.Span(e.get("figure") or e["kind"], className="tag tag-kind"),
                            *[html.Span(t, className="tag") for t in e.get("tags", [])],
                        ]
                    ),
                    html.P(e.get("notes") or "", className="gcard-notes"),
                    html.Div(
                        className="gcard-foot",
                        children=[
                            html.Span(f"by {e.get('author') or 'unknown'} · ", className="muted"),
                            dcc.Link(e.get("study_name") or e["study_id"], href=f"/study/{e['study_id']}"),
                            html.Span(f" · ★ {e.get('stars', 0)}", className="stars"),
                            ui.edit_only(
                                html.Button(
                                    "unstar" if e.get("starred") else "star",
                                    id=pattern(Gallery.STAR_TYPE, id=e["id"], on=not e.get("starred")),
                                    className="btn btn-small",
                                ),
                                className="inline",
                            ),
                        ],
                    ),
                ],
            ),
        ],
    )


def register(app: dash.Dash) -> None:
    """Register the page and install its callbacks on `app`."""
    dash.register_page(__name__, path="/gallery", layout=layout, title="Gallery · LMC Lab", name="Gallery")
    callbacks.install(app)


urlstate.sync(
    callbacks,
    Gallery.URL,
    {
        "q": (Gallery.QUERY, "value"),
        "tag": (Gallery.TAG, "value"),
        "author": (Gallery.AUTHOR, "value"),
        "figure": (Gallery.FIGURE, "value"),
        "sort": (Gallery.SORT, "value"),
    },
)


@callbacks.callback(
    Output(Gallery.CARDS, "children"),
    Output(Gallery.COUNT, "children"),
    Input(Gallery.QUERY, "value"),
    Input(Gallery.TAG, "value"),
    Input(Gallery.AUTHOR, "value"),
    Input(Gallery.FIGURE, "value"),
    Input(Gallery.SORT, "value"),
    Input(Gallery.REV, "data"),
    State(Shell.TOKEN, "data"),
)
def cards(
    q: str | None, tag: str | None, author: str | None, figure: str | None, sort: str | None, _rev: int | None, token: str | None
) -> tuple[Any, str]:
    """Return the cards of the entries matching the filter, and their count."""
    try:
        page = api(token).gallery(q=q or None, tag=tag or None, author=author or None, figure=figure, sort=sort, limit=100)
    except ApiError as err:
        return ui.error(err.message), ""
    if not page["data"]:
        return ui.empty("nothing published matches; publish a figure from a study page"), "0 entries"
    return [card(e) for e in page["data"]], f"{page['count']} entries"


@callbacks.callback(
    Output(Gallery.REV, "data"),
    Input(pattern(Gallery.STAR_TYPE, id=ALL, on=ALL), "n_clicks"),
    State(Gallery.REV, "data"),
    State(Shell.TOKEN, "data"),
    prevent_initial_call=True,
)
def star(clicks: list[int | None], rev: int | None, token: str | None) -> Any:
    """Star or unstar the clicked entry; return the next revision (reloads the cards)."""
    if not any(clicks) or not isinstance(dash.ctx.triggered_id, dict):
        return no_update
    try:
        api(token).star(dash.ctx.triggered_id["id"], dash.ctx.triggered_id["on"])
    except ApiError:
        return no_update
    return (rev or 0) + 1
