"""Compare page: two to four studies side by side: overlaid curves in the shared palette, surfaces on one colour scale, config diff."""

from __future__ import annotations

import json
from typing import Any

import dash
from dash import Input, Output, State, dash_table, dcc, html

from .. import figures, schema_form, stages, ui, urlstate
from ..client import ApiError

MAX_STUDIES = 4


def diff_rows(configs: list[dict[str, Any]], names: list[str], only_differences: bool) -> list[dict[str, Any]]:
    """Return one row per config field (dotted path) with each study's value; only differing fields when asked."""
    flats = [schema_form.flatten(c) for c in configs]
    paths = sorted(set().union(*flats)) if flats else []
    rows = []
    for p in paths:
        vals = [json.dumps(f.get(p), sort_keys=True) if p in f else "–" for f in flats]
        if only_differences and len(set(vals)) == 1:
            continue
        rows.append({"field": p, **{names[i]: v for i, v in enumerate(vals)}, "_differs": len(set(vals)) > 1})
    return rows


def layout(ids: str | None = None, **q) -> html.Div:
    """Return the compare page; ?ids=a,b,c picks the studies, ?round= the interpolation round, ?all=1 shows every config field."""
    chosen = [i for i in (ids or "").split(",") if i][:MAX_STUDIES]
    return html.Div(className="compare", children=[
        dcc.Store(id="cp-url"),
        html.Div(className="page-head", children=[html.H1("Compare studies")]),
        html.Div(className="controls", children=[
            dcc.Dropdown(id="cp-ids", value=chosen, options=[{"label": c, "value": c} for c in chosen], multi=True, placeholder="choose 2 to 4 studies", className="dd-wide"),
            html.Label(["interpolation round", dcc.Input(id="cp-round", type="number", min=0, step=1, value=int(urlstate.first(q, "round", "0")),
                                                         className="input-num")]),
            dcc.RadioItems(id="cp-barrier", options=[{"label": "error barrier", "value": "error_barrier"}, {"label": "loss barrier", "value": "loss_barrier"},
                                                     {"label": "accuracy", "value": "accuracy_mean"}],
                           value=urlstate.first(q, "metric", "error_barrier"), inline=True),
        ]),
        html.Div(id="cp-msg"),
        html.P("Colour = mask source (the same on every page); line dash and marker = study.", className="hint"),
        html.Div(className="grid2", children=[ui.card("vs sparsity", ui.loading(ui.graph("cp-sparsity"))),
                                              ui.card("Interpolation (test error)", ui.loading(ui.graph("cp-interp")))]),
        ui.card("Loss surfaces (one shared colour scale)", dcc.Checklist(id="cp-log", options=[{"label": "log scale", "value": "log"}],
                                                                         value=["log"] if urlstate.first(q, "log") == "1" else [], inline=True),
                ui.loading(html.Div(id="cp-surfaces", className="grid-auto"))),
        ui.card("Config", dcc.Checklist(id="cp-diffonly", options=[{"label": "differences only", "value": "on"}],
                                        value=[] if urlstate.first(q, "all") == "1" else ["on"], inline=True),
                ui.loading(html.Div(id="cp-diff"))),
    ])


def register(app, api) -> None:
    """Register the page and its callbacks."""
    dash.register_page(__name__, path="/compare", layout=layout, title="Compare · LMC Lab", name="Compare")
    app.clientside_callback(
        """function(ids, round, metric, log, diffonly) {
            const q = new URLSearchParams();
            if (ids && ids.length) q.set('ids', ids.join(','));
            if (round) q.set('round', round);
            if (metric && metric !== 'error_barrier') q.set('metric', metric);
            if (log && log.length) q.set('log', '1');
            if (!(diffonly && diffonly.length)) q.set('all', '1');
            const s = q.toString();
            window.history.replaceState(window.history.state, '', window.location.pathname + (s ? '?' + s : ''));
            return s;
        }""",
        Output("cp-url", "data"), Input("cp-ids", "value"), Input("cp-round", "value"), Input("cp-barrier", "value"), Input("cp-log", "value"),
        Input("cp-diffonly", "value"))

    @app.callback(Output("cp-ids", "options"), Input("cp-ids", "id"), State("cp-ids", "value"), State("token", "data"))
    def options(_id, chosen, token):
        try:
            rows = api(token).studies(limit=200, archived="any")["data"]
        except ApiError:
            return [{"label": c, "value": c} for c in chosen or []]
        return [{"label": f"{s['name']} · {s['status']} · {s['id'][:8]}", "value": s["id"]} for s in rows]

    @app.callback(Output("cp-sparsity", "figure"), Output("cp-interp", "figure"), Output("cp-surfaces", "children"), Output("cp-diff", "children"),
                  Output("cp-msg", "children"),
                  Input("cp-ids", "value"), Input("cp-round", "value"), Input("cp-barrier", "value"), Input("cp-log", "value"),
                  Input("cp-diffonly", "value"), State("token", "data"))
    def compare(ids, rnd, metric, log, diffonly, token):
        ids = (ids or [])[:MAX_STUDIES]
        if len(ids) < 2:
            e = figures.empty("choose at least two studies")
            return e, e, ui.empty("choose at least two studies"), "", ""
        client = api(token)
        sp, ip = None, None
        surfaces, configs, names, problems = [], [], [], []
        for i, sid in enumerate(ids):
            try:
                study = client.study(sid)
            except ApiError as err:
                problems.append(f"{sid}: {err.message}")
                continue
            label = f"{study['name']} ({sid[:6]})"
            names.append(label)
            configs.append(study["config"])
            try:
                sp = figures.sparsity(client.figure(sid, "sparsity"), metric, study=label, index=i, fig=sp if sp is not None and sp.data else None)
            except ApiError as err:
                problems.append(f"{label}: {err.message}")
            try:
                curves = figures.select_curves(client.figure(sid, "interpolation")["curves"], rounds=[int(rnd or 0)])
                ip = figures.interpolation(curves, "error", ("test",), study=label, index=i, fig=ip if ip is not None and ip.data else None)
            except ApiError as err:
                problems.append(f"{label}: {err.message}")
            try:
                index = client.figures_index(sid)
                if index.get("surface"):
                    surfaces.append((label, client.figure(sid, "surface", stage=index["surface"][0])))
            except ApiError as err:
                problems.append(f"{label}: {err.message}")
        lg = "log" in (log or [])
        zr = figures.shared_range([d for _, d in surfaces], "loss", lg) if surfaces else None
        surf_children = [ui.graph({"type": "cp-surface", "i": i}) for i in range(len(surfaces))]
        for g, (label, d), i in zip(surf_children, surfaces, range(len(surfaces))):
            g.figure = figures.contour(d, "loss", lg, zrange=zr, title=f"{label}: {stages.label(d['stage'])}", showscale=i == len(surfaces) - 1)
        rows = diff_rows(configs, names, bool(diffonly))
        diff = dash_table.DataTable(data=rows, columns=[{"name": c, "id": c} for c in ["field", *names]], style_as_list_view=True, page_size=60,
                                    style_cell={"fontFamily": "ui-monospace, monospace", "fontSize": "12px", "textAlign": "left", "whiteSpace": "normal"},
                                    style_data_conditional=[{"if": {"filter_query": "{_differs} = true"}, "backgroundColor": "#fff7e6"}]) \
            if rows else ui.empty("the configs are identical")
        msg = ui.error("; ".join(problems), title="Some parts are missing") if problems else ""
        return (sp or figures.empty("no results")), (ip or figures.empty("no paths")), (surf_children or ui.empty("no surface in these studies")), diff, msg
