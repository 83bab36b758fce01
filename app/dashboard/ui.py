"""Small building blocks shared by the pages: status badges, loading, empty and error states, cards."""

from __future__ import annotations

from typing import Any

from dash import dcc, html

STATUS_CLASS = {"queued": "queued", "running": "running", "finished": "finished", "failed": "failed", "cancelled": "cancelled"}
GRAPH_CONFIG: dcc.Graph.Config = {"displaylogo": False, "toImageButtonOptions": {"format": "png", "scale": 2}}


def badge(status: str) -> html.Span:
    """Return a coloured status badge."""
    return html.Span(status, className=f"badge badge-{STATUS_CLASS.get(status, 'other')}")


def badge_html(status: str) -> str:
    """Return a status badge as HTML, for markdown cells of a DataTable."""
    return f'<span class="badge badge-{STATUS_CLASS.get(status, "other")}">{status}</span>'


def error(message: str, title: str = "The API said") -> html.Div:
    """Return an error box quoting the API's message."""
    return html.Div([html.Strong(title + ": "), html.Span(message)], className="state state-error", role="alert")


def empty(message: str) -> html.Div:
    """Return an 'empty' state: nothing to show yet, and why."""
    return html.Div(message, className="state state-empty")


def ok(message: Any) -> html.Div:
    """Return a success note."""
    return html.Div(message, className="state state-ok")


def loading(child: Any, id: str | None = None) -> dcc.Loading:
    """Return `child` wrapped in a loading indicator shown while its callbacks run."""
    kw: dict[str, Any] = {"id": id} if id else {}
    return dcc.Loading(child, type="dot", color="#0072B2", delay_show=250, **kw)


def card(title: str, *children: Any, id: str | None = None, extra: Any = None) -> html.Section:
    """Return a titled card section."""
    head = [html.H3(title)] + ([html.Div(extra, className="card-extra")] if extra is not None else [])
    kw: dict[str, Any] = {"id": id} if id else {}
    return html.Section([html.Div(head, className="card-head"), *children], className="card", **kw)


def graph(id: Any, height: int | None = None, figure: Any = None) -> dcc.Graph:
    """Return a graph with the house modebar (PNG export at 2x, no logo), drawing `figure` when given."""
    style = {"height": f"{height}px"} if height else None
    return dcc.Graph(id=id, config=GRAPH_CONFIG, style=style, **({"figure": figure} if figure is not None else {}))


def edit_only(*children: Any, className: str = "", **kw: Any) -> html.Div:
    """Return a block shown only to visitors holding a token (the root's can-edit class reveals it)."""
    return html.Div(list(children), className=f"edit-only {className}".strip(), **kw)


def fmt_seconds(s: float | None) -> str:
    """Return a duration as '1 h 02 min', '3 min 05 s' or '12 s'."""
    if s is None:
        return "–"
    s = round(s)
    if s >= 3600:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    if s >= 60:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s} s"
