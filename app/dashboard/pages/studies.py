"""Studies page (home): every study in a table with status and key results; sort, filter, choose columns, bulk archive/tag, CSV."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import dash
from dash import Input, Output, State, dash_table, dcc, html, no_update

from .. import ui, urlstate
from ..client import ApiError, Client

STATUSES = ("queued", "running", "finished", "failed", "cancelled")
COLUMNS = OrderedDict([
    ("name", "study"), ("status", "status"), ("preset", "preset"), ("owner", "owner"), ("tags", "tags"), ("progress", "stages"),
    ("final_accuracy", "final accuracy (%)"), ("largest_barrier", "largest error barrier (pt)"), ("sparsity_reached", "sparsity reached (%)"),
    ("created", "created"), ("run_id", "run id"), ("id", "id"),
])
DEFAULT_COLUMNS = ["name", "status", "preset", "owner", "tags", "progress", "final_accuracy", "largest_barrier", "sparsity_reached", "created"]
_summaries: OrderedDict[tuple[str, str], dict[str, Any]] = OrderedDict()


def key_results(table: list[dict[str, Any]]) -> dict[str, Any]:
    """Return a study's headline numbers: accuracy at the highest sparsity reached, the largest error barrier, that sparsity."""
    rows = [r for r in table if r.get("source") != "sweep" and r.get("sparsity") is not None]
    if not rows:
        return {"final_accuracy": None, "largest_barrier": None, "sparsity_reached": None}
    top = max(r["sparsity"] for r in rows)
    finals = [r["accuracy_mean"] for r in rows if r["sparsity"] == top and r.get("accuracy_mean") is not None]
    barriers = [r["error_barrier"] for r in table if r.get("error_barrier") is not None]
    return {"final_accuracy": round(max(finals), 2) if finals else None, "largest_barrier": round(max(barriers), 2) if barriers else None,
            "sparsity_reached": round(top, 1)}


def _summary(client: Client, s: dict[str, Any]) -> dict[str, Any]:
    # One results call per study, remembered until the study changes: the list endpoint has no result columns.
    key = (s["id"], s["updated_at"])
    if key not in _summaries:
        try:
            _summaries[key] = key_results(client.results(s["id"])["table"]) if s["stages_done"] else key_results([])
        except ApiError:
            return key_results([])
        while len(_summaries) > 2000:
            _summaries.popitem(last=False)
    return _summaries[key]


def row(client: Client, s: dict[str, Any]) -> dict[str, Any]:
    """Return one table row for a study."""
    return {"id": s["id"], "name": f"[{s['name']}](/study/{s['id']})", "status": ui.badge_html(s["status"]), "preset": s.get("preset") or "",
            "owner": s.get("owner") or "", "tags": ", ".join(s.get("tags", [])), "progress": f"{s['stages_done']}/{s['stages_total']}",
            "created": s["created_at"][:16].replace("T", " "), "run_id": s["run_id"], "status_text": s["status"], **_summary(client, s)}


def layout(**q) -> html.Div:
    """Return the studies table; ?q=, ?status=, ?tag=, ?archived=, ?cols= restore the view."""
    cols = urlstate.many(q, "cols") or DEFAULT_COLUMNS
    return html.Div(className="studies", children=[
        dcc.Store(id="sl-url"),
        dcc.Store(id="sl-rev", data=0),
        dcc.Interval(id="sl-poll", interval=5000),
        html.Div(className="page-head", children=[html.H1("Studies"), html.Div(id="sl-count", className="meta"),
                                                  dcc.Link("Launch a study", href="/launch", className="btn btn-primary")]),
        html.Div(className="controls", children=[
            dcc.Input(id="sl-q", value=urlstate.first(q, "q", ""), placeholder="name contains", debounce=True, className="input"),
            dcc.Dropdown(id="sl-status", options=list(STATUSES), value=urlstate.many(q, "status") or [], multi=True, placeholder="any status", className="dd"),
            dcc.Input(id="sl-tag", value=urlstate.first(q, "tag", ""), placeholder="tag", debounce=True, className="input"),
            dcc.RadioItems(id="sl-archived", options=[{"label": "active", "value": "false"}, {"label": "archived", "value": "true"},
                                                      {"label": "all", "value": "any"}], value=urlstate.first(q, "archived", "false"), inline=True),
        ]),
        html.Details(className="colchooser", children=[html.Summary("columns"),
                                                       dcc.Checklist(id="sl-cols", options=[{"label": v, "value": k} for k, v in COLUMNS.items()],
                                                                     value=cols, inline=True)]),
        ui.edit_only(html.Div(className="bulk", children=[
            html.Span("selected: "),
            html.Button("Archive", id="sl-archive", className="btn btn-small"),
            html.Button("Unarchive", id="sl-unarchive", className="btn btn-small"),
            dcc.Input(id="sl-newtag", placeholder="tag to add", className="input"),
            html.Button("Add tag", id="sl-addtag", className="btn btn-small"),
            html.Span(id="sl-bulk-msg"),
        ])),
        html.Div(id="sl-error"),
        ui.loading(dash_table.DataTable(
            id="sl-table", data=[], columns=[], row_selectable="multi", selected_rows=[], sort_action="native", filter_action="native",
            page_size=25, export_format="csv", export_headers="display", markdown_options={"html": True, "link_target": "_self"},
            style_as_list_view=True, style_cell={"fontFamily": "inherit", "padding": "6px 10px", "textAlign": "left"},
            style_header={"fontWeight": "600", "backgroundColor": "#f6f7f9"},
            css=[{"selector": ".dash-spreadsheet td div", "rule": "line-height: 1.2;"}],
        )),
    ])


def register(app, api) -> None:
    """Register the page and its callbacks."""
    dash.register_page(__name__, path="/", layout=layout, title="Studies · LMC Lab", name="Studies")
    urlstate.sync(app, "sl-url", {"q": ("sl-q", "value"), "status": ("sl-status", "value"), "tag": ("sl-tag", "value"),
                                  "archived": ("sl-archived", "value"), "cols": ("sl-cols", "value")})

    @app.callback(Output("sl-table", "data"), Output("sl-table", "columns"), Output("sl-count", "children"), Output("sl-error", "children"),
                  Input("sl-q", "value"), Input("sl-status", "value"), Input("sl-tag", "value"), Input("sl-archived", "value"),
                  Input("sl-cols", "value"), Input("sl-rev", "data"), Input("sl-poll", "n_intervals"), State("token", "data"))
    def table(q, status, tag, archived, cols, _rev, _n, token):
        client = api(token)
        try:
            page = client.studies(q=q or None, status=status or None, tag=tag or None, archived=archived, limit=200)
        except ApiError as err:
            return [], [], "", ui.error(err.message)
        rows = [row(client, s) for s in page["data"]]
        columns = [{"name": COLUMNS[c], "id": c, **({"presentation": "markdown"} if c in ("name", "status") else {}),
                    **({"type": "numeric"} if c in ("final_accuracy", "largest_barrier", "sparsity_reached") else {})}
                   for c in COLUMNS if c in (cols or DEFAULT_COLUMNS)]
        msg = "" if rows else ui.empty("no study matches; launch one from the Launch page")
        return rows, columns, f"{page['count']} studies", msg

    @app.callback(Output("sl-bulk-msg", "children"), Output("sl-rev", "data"), Output("sl-table", "selected_rows"),
                  Input("sl-archive", "n_clicks"), Input("sl-unarchive", "n_clicks"), Input("sl-addtag", "n_clicks"),
                  State("sl-table", "selected_rows"), State("sl-table", "data"), State("sl-newtag", "value"), State("sl-rev", "data"),
                  State("token", "data"), prevent_initial_call=True)
    def bulk(a, u, t, selected, data, newtag, rev, token):
        if not (a or u or t):
            return no_update, no_update, no_update
        ids = [data[i]["id"] for i in selected or [] if i < len(data)]
        if not ids:
            return "select studies first (tick their boxes)", no_update, no_update
        client, what, done = api(token), dash.ctx.triggered_id, 0
        try:
            for sid in ids:
                if what == "sl-addtag":
                    if not (newtag or "").strip():
                        return "type a tag first", no_update, no_update
                    tags = client.study(sid)["tags"]
                    client.update_study(sid, {"tags": sorted(set(tags) | {newtag.strip()})})
                else:
                    client.update_study(sid, {"archived": what == "sl-archive"})
                done += 1
        except ApiError as err:
            return ui.error(err.message, title=f"after {done} of {len(ids)}"), (rev or 0) + 1, []
        return f"done for {done} studies", (rev or 0) + 1, []
