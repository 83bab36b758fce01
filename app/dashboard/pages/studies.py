"""Studies page (home): every study in a table with status and key results; sort, filter, choose columns, bulk archive/tag, CSV."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import dash
from dash import Input, Output, State, dash_table, dcc, html, no_update
from dash.dash_table.Format import Format, Scheme

from .. import ui, urlstate
from ..callbacks import Callbacks
from ..client import ApiError, api
from ..ids import Shell, Studies

STATUSES = ("queued", "running", "finished", "failed", "cancelled")
COLUMNS = OrderedDict(
    [
        ("name", "study"),
        ("status", "status"),
        ("preset", "preset"),
        ("owner", "owner"),
        ("tags", "tags"),
        ("progress", "stages"),
        ("final_accuracy", "final accuracy (%)"),
        ("largest_barrier", "largest error barrier (points)"),
        ("sparsity_reached", "sparsity reached (%)"),
        ("created", "created"),
        ("queue", "queue"),
        ("run_id", "run id"),
        ("id", "id"),
    ]
)
DEFAULT_COLUMNS = [
    "name",
    "status",
    "preset",
    "owner",
    "tags",
    "progress",
    "final_accuracy",
    "largest_barrier",
    "sparsity_reached",
    "created",
]
NUMERIC = {"final_accuracy": 2, "largest_barrier": 2, "sparsity_reached": 1}  # column -> decimals shown
# Table column -> the API's sort field: these sort over every study, not just the rows shown; the others sort the rows at hand.
API_SORT_FIELD = {
    "name": "name",
    "status": "status",
    "created": "created_at",
    "final_accuracy": "final_accuracy",
    "largest_barrier": "largest_barrier",
    "sparsity_reached": "sparsity_reached",
}
DEFAULT_SORT = "-created_at"
callbacks = Callbacks()


def row(s: dict[str, Any]) -> dict[str, Any]:
    """Return one table row for a study; its key results come with the list (the API's sync keeps them on the study row)."""
    return {
        "id": s["id"],
        "name": f"[{s['name']}](/study/{s['id']})",
        "status": ui.badge_html(s["status"]),
        "preset": s.get("preset") or "",
        "owner": s.get("owner") or "",
        "tags": ", ".join(s.get("tags", [])),
        "progress": f"{s['stages_done']}/{s['stages_total']}",
        "created": s["created_at"][:16].replace("T", " "),
        "run_id": s["run_id"],
        "status_text": s["status"],
        "queue": s.get("queue") or "",
        **{k: s.get(k) for k in NUMERIC},
    }


def sort_param(sort_by: list[dict[str, str]] | None) -> str:
    """Return the API's sort parameter for the table's sort (newest first when the column is not one the API sorts)."""
    first = (sort_by or [{}])[0]
    field = API_SORT_FIELD.get(first.get("column_id", ""))
    if field is None:
        return DEFAULT_SORT
    return ("-" if first.get("direction") == "desc" else "") + field


def sort_by_of(param: str | None) -> list[dict[str, str]]:
    """Return the table's sort_by for an API sort parameter from the URL (?sort=-final_accuracy)."""
    field = (param or "").lstrip("-")
    column = next((c for c, f in API_SORT_FIELD.items() if f == field), None)
    return [{"column_id": column, "direction": "desc" if param.startswith("-") else "asc"}] if column and param else []


def sort_rows(rows: list[dict[str, Any]], sort_by: list[dict[str, str]] | None) -> list[dict[str, Any]]:
    """Return the rows sorted by a column the API does not sort (blank values last), or as they came."""
    if not sort_by or sort_by[0].get("column_id") in API_SORT_FIELD:
        return rows
    col, desc = sort_by[0]["column_id"], sort_by[0].get("direction") == "desc"
    filled = sorted((r for r in rows if r.get(col) not in (None, "")), key=lambda r: str(r[col]).lower(), reverse=desc)
    return filled + [r for r in rows if r.get(col) in (None, "")]


def _column(c: str) -> dict[str, Any]:
    spec: dict[str, Any] = {"name": COLUMNS[c], "id": c}
    if c in ("name", "status"):
        spec["presentation"] = "markdown"
    if c in NUMERIC:  # the values are already in % and points; the headers say which
        spec.update(type="numeric", format=Format(precision=NUMERIC[c], scheme=Scheme.fixed, nully="–"))
    return spec


def layout(**q) -> html.Div:
    """Return the studies table; ?q=, ?status=, ?tag=, ?archived=, ?cols=, ?sort= restore the view."""
    cols = urlstate.many(q, "cols") or DEFAULT_COLUMNS
    return html.Div(
        className="studies",
        children=[
            dcc.Store(id=Studies.URL),
            dcc.Store(id=Studies.SORT, data=urlstate.first(q, "sort")),
            dcc.Store(id=Studies.REV, data=0),
            dcc.Interval(id=Studies.POLL, interval=5000),
            html.Div(
                className="page-head",
                children=[
                    html.H1("Studies"),
                    html.Div(id=Studies.COUNT, className="meta"),
                    dcc.Link("Launch a study", href="/launch", className="btn btn-primary"),
                ],
            ),
            html.Div(
                className="controls",
                children=[
                    dcc.Input(
                        id=Studies.QUERY, value=urlstate.first(q, "q", ""), placeholder="name contains", debounce=True, className="input"
                    ),
                    dcc.Dropdown(
                        id=Studies.STATUS,
                        options=list(STATUSES),
                        value=urlstate.many(q, "status") or [],
                        multi=True,
                        placeholder="any status",
                        className="dd",
                    ),
                    dcc.Input(id=Studies.TAG, value=urlstate.first(q, "tag", ""), placeholder="tag", debounce=True, className="input"),
                    dcc.RadioItems(
                        id=Studies.ARCHIVED,
                        options=[
                            {"label": "active", "value": "false"},
                            {"label": "archived", "value": "true"},
                            {"label": "all", "value": "any"},
                        ],
                        value=urlstate.first(q, "archived", "false"),
                        inline=True,
                    ),
                ],
            ),
            html.Details(
                className="colchooser",
                children=[
                    html.Summary("columns"),
                    dcc.Checklist(
                        id=Studies.COLUMNS, options=[{"label": v, "value": k} for k, v in COLUMNS.items()], value=cols, inline=True
                    ),
                ],
            ),
            ui.edit_only(
                html.Div(
                    className="bulk",
                    children=[
                        html.Span("selected: "),
                        html.Button("Archive", id=Studies.ARCHIVE, className="btn btn-small"),
                        html.Button("Unarchive", id=Studies.UNARCHIVE, className="btn btn-small"),
                        dcc.Input(id=Studies.NEW_TAG, placeholder="tag to add", className="input"),
                        html.Button("Add tag", id=Studies.ADD_TAG, className="btn btn-small"),
                        html.Span(id=Studies.BULK_MSG),
                    ],
                )
            ),
            html.Div(id=Studies.ERROR),
            ui.loading(
                dash_table.DataTable(  # type: ignore[attr-defined]  # dash.dash_table exports it by a star import mypy does not follow
                    id=Studies.TABLE,
                    data=[],
                    columns=[],
                    row_selectable="multi",
                    selected_rows=[],
                    sort_action="custom",
                    sort_mode="single",
                    sort_by=sort_by_of(urlstate.first(q, "sort")),
                    filter_action="native",
                    page_size=25,
                    export_format="csv",
                    export_headers="display",
                    markdown_options={"html": True, "link_target": "_self"},
                    style_as_list_view=True,
                    style_cell={"fontFamily": "inherit", "padding": "6px 10px", "textAlign": "left"},
                    style_header={"fontWeight": "600", "backgroundColor": "#f6f7f9"},
                    css=[{"selector": ".dash-spreadsheet td div", "rule": "line-height: 1.2;"}],
                )
            ),
        ],
    )


def register(app: dash.Dash) -> None:
    """Register the page and install its callbacks on `app`."""
    dash.register_page(__name__, path="/", layout=layout, title="Studies · LMC Lab", name="Studies")
    callbacks.install(app)


urlstate.sync(
    callbacks,
    Studies.URL,
    {
        "q": (Studies.QUERY, "value"),
        "status": (Studies.STATUS, "value"),
        "tag": (Studies.TAG, "value"),
        "archived": (Studies.ARCHIVED, "value"),
        "cols": (Studies.COLUMNS, "value"),
        "sort": (Studies.SORT, "data"),
    },
)


@callbacks.callback(Output(Studies.SORT, "data"), Input(Studies.TABLE, "sort_by"), prevent_initial_call=True)
def remember_sort(sort_by: list[dict[str, str]] | None) -> str | None:
    """Return the table's sort as the URL keeps it (?sort=-final_accuracy, as the API spells it); None for the default or
    a column the API does not sort."""
    param = sort_param(sort_by)
    return None if param == DEFAULT_SORT else param


@callbacks.callback(
    Output(Studies.TABLE, "data"),
    Output(Studies.TABLE, "columns"),
    Output(Studies.COUNT, "children"),
    Output(Studies.ERROR, "children"),
    Input(Studies.QUERY, "value"),
    Input(Studies.STATUS, "value"),
    Input(Studies.TAG, "value"),
    Input(Studies.ARCHIVED, "value"),
    Input(Studies.COLUMNS, "value"),
    Input(Studies.TABLE, "sort_by"),
    Input(Studies.REV, "data"),
    Input(Studies.POLL, "n_intervals"),
    State(Shell.TOKEN, "data"),
)
def table(
    q: str | None,
    status: list[str] | None,
    tag: str | None,
    archived: str | None,
    cols: list[str] | None,
    sort_by: list[dict[str, str]] | None,
    _rev: int | None,
    _n: int | None,
    token: str | None,
) -> tuple[Any, Any, Any, Any]:
    """Return the table's rows and columns, the count, and an error or empty-state message."""
    try:  # one query: the key results are columns of the study list
        page = api(token).studies(
            q=q or None, status=status or None, tag=tag or None, archived=archived, sort=sort_param(sort_by), limit=200
        )
    except ApiError as err:
        return [], [], "", ui.error(err.message)
    rows = sort_rows([row(s) for s in page["data"]], sort_by)
    columns = [_column(c) for c in COLUMNS if c in (cols or DEFAULT_COLUMNS)]
    msg = "" if rows else ui.empty("no study matches; launch one from the Launch page")
    return rows, columns, f"{page['count']} studies", msg


@callbacks.callback(
    Output(Studies.BULK_MSG, "children"),
    Output(Studies.REV, "data"),
    Output(Studies.TABLE, "selected_rows"),
    Input(Studies.ARCHIVE, "n_clicks"),
    Input(Studies.UNARCHIVE, "n_clicks"),
    Input(Studies.ADD_TAG, "n_clicks"),
    State(Studies.TABLE, "selected_rows"),
    State(Studies.TABLE, "data"),
    State(Studies.NEW_TAG, "value"),
    State(Studies.REV, "data"),
    State(Shell.TOKEN, "data"),
    prevent_initial_call=True,
)
def bulk(
    a: int | None,
    u: int | None,
    t: int | None,
    selected: list[int] | None,
    data: list[dict[str, Any]],
    newtag: str | None,
    rev: int | None,
    token: str | None,
) -> tuple[Any, Any, Any]:
    """Archive, unarchive or tag the selected studies; return a message, the next revision (reloads the table) and no selection."""
    if not (a or u or t):
        return no_update, no_update, no_update
    ids = [data[i]["id"] for i in selected or [] if i < len(data)]
    if not ids:
        return "select studies first (tick their boxes)", no_update, no_update
    client, what, done = api(token), dash.ctx.triggered_id, 0
    try:
        for sid in ids:
            if what == Studies.ADD_TAG:
                if newtag is None or not newtag.strip():
                    return "type a tag first", no_update, no_update
                tags = client.study(sid)["tags"]
                client.update_study(sid, {"tags": sorted(set(tags) | {newtag.strip()})})
            else:
                client.update_study(sid, {"archived": what == Studies.ARCHIVE})
            done += 1
    except ApiError as err:
        return ui.error(err.message, title=f"after {done} of {len(ids)}"), (rev or 0) + 1, []
    return f"done for {done} studies", (rev or 0) + 1, []
