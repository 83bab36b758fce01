"""Compare page: two to four studies side by side: overlaid curves in the shared palette, surfaces on one colour scale, config diff."""

from __future__ import annotations

import json
from typing import Any

import dash
from dash import Input, Output, State, dash_table, dcc, html

from .. import figures, schema_form, stages, ui, urlstate
from ..callbacks import Callbacks
from ..client import ApiError, api
from ..ids import Compare, Shell, pattern

MAX_STUDIES = 4
callbacks = Callbacks()


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


def layout(ids: str | None = None, **q: str) -> html.Div:
    """Return the compare page; ?ids=a,b,c picks the studies, ?round= the interpolation round, ?all=1 shows every config field."""
    chosen = [i for i in (ids or "").split(",") if i][:MAX_STUDIES]
    return html.Div(
        className="compare",
        children=[
            dcc.Store(id=Compare.URL),
            html.Div(className="page-head", children=[html.H1("Compare studies")]),
            html.Div(
                className="controls",
                children=[
                    dcc.Dropdown(
                        id=Compare.IDS,
                        value=chosen,
                        options=[{"label": c, "value": c} for c in chosen],
                        multi=True,
                        placeholder="choose 2 to 4 studies",
                        className="dd-wide",
                    ),
                    html.Label(
                        [
                            "interpolation round",
                            dcc.Input(
                                id=Compare.ROUND,
                                type="number",
                                min=0,
                                step=1,
                                value=int(urlstate.first(q, "round") or 0),
                                className="input-num",
                            ),
                        ]
                    ),
                    dcc.RadioItems(
                        id=Compare.METRIC,
                        options=[
                            {"label": "error barrier", "value": "error_barrier"},
                            {"label": "loss barrier", "value": "loss_barrier"},
                            {"label": "accuracy", "value": "accuracy_mean"},
                        ],
                        value=urlstate.first(q, "metric", "error_barrier"),
                        inline=True,
                    ),
                ],
            ),
            html.Div(id=Compare.MSG),
            html.P("Colour = mask source (the same on every page); line dash and marker = study.", className="hint"),
            html.Div(
                className="grid2",
                children=[
                    ui.card("vs sparsity", ui.loading(ui.graph(Compare.SPARSITY_GRAPH))),
                    ui.card("Interpolation (test error)", ui.loading(ui.graph(Compare.INTERP_GRAPH))),
                ],
            ),
            ui.card(
                "Loss surfaces (one shared colour scale)",
                dcc.Checklist(
                    id=Compare.LOG,
                    options=[{"label": "log scale", "value": "log"}],
                    value=["log"] if urlstate.first(q, "log") == "1" else [],
                    inline=True,
                ),
                ui.loading(html.Div(id=Compare.SURFACES, className="grid-auto")),
            ),
            ui.card(
                "Config",
                dcc.Checklist(
                    id=Compare.DIFF_ONLY,
                    options=[{"label": "differences only", "value": "on"}],
                    value=[] if urlstate.first(q, "all") == "1" else ["on"],
                    inline=True,
                ),
                ui.loading(html.Div(id=Compare.DIFF)),
            ),
        ],
    )


def register(app: dash.Dash) -> None:
    """Register the page and install its callbacks on `app`."""
    dash.register_page(__name__, path="/compare", layout=layout, title="Compare · LMC Lab", name="Compare")
    callbacks.install(app)


callbacks.clientside_callback(
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
    Output(Compare.URL, "data"),
    Input(Compare.IDS, "value"),
    Input(Compare.ROUND, "value"),
    Input(Compare.METRIC, "value"),
    Input(Compare.LOG, "value"),
    Input(Compare.DIFF_ONLY, "value"),
)


@callbacks.callback(Output(Compare.IDS, "options"), Input(Compare.IDS, "id"), State(Compare.IDS, "value"), State(Shell.TOKEN, "data"))
def options(_id: str, chosen: list[str] | None, token: str | None) -> list[dict[str, str]]:
    """Return the studies to choose from (the chosen ones alone when the API fails)."""
    try:
        rows = api(token).studies(limit=200, archived="any")["data"]
    except ApiError:
        return [{"label": c, "value": c} for c in chosen or []]
    return [{"label": f"{s['name']} · {s['status']} · {s['id'][:8]}", "value": s["id"]} for s in rows]


@callbacks.callback(
    Output(Compare.SPARSITY_GRAPH, "figure"),
    Output(Compare.INTERP_GRAPH, "figure"),
    Output(Compare.SURFACES, "children"),
    Output(Compare.DIFF, "children"),
    Output(Compare.MSG, "children"),
    Input(Compare.IDS, "value"),
    Input(Compare.ROUND, "value"),
    Input(Compare.METRIC, "value"),
    Input(Compare.LOG, "value"),
    Input(Compare.DIFF_ONLY, "value"),
    State(Shell.TOKEN, "data"),
)
def compare(
    ids: list[str] | None, rnd: int | None, metric: str, log: list[str] | None, diffonly: list[str] | None, token: str | None
) -> tuple[Any, Any, Any, Any, Any]:
    """Return the overlaid sparsity and interpolation figures, the surfaces on one colour scale, the config diff and problems."""
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
            sp = figures.sparsity(
                client.figure(sid, "sparsity"), metric, study=label, index=i, fig=sp if sp is not None and sp.data else None
            )
        except ApiError as err:
            problems.append(f"{label}: {err.message}")
        try:
            curves = figures.select_curves(client.figure(sid, "interpolation")["curves"], rounds=[int(rnd or 0)])
            ip = figures.interpolation(curves, "error", ("test",), study=label, index=i, fig=ip if ip is not None and ip.data else None)
        except ApiError as err:
            problems.append(f"{label}: {err.message}")
        try:
            surface_stages = client.figures_index(sid)["figures"].get("surface")
            if surface_stages:
                surfaces.append((label, client.figure(sid, "surface", stage=surface_stages[0])))
        except ApiError as err:
            problems.append(f"{label}: {err.message}")
    lg = "log" in (log or [])
    zr = figures.shared_range([d for _, d in surfaces], "loss", lg) if surfaces else None
    surf_children = [
        ui.graph(
            pattern(Compare.SURFACE_TYPE, i=i),
            figure=figures.contour(
                d,
                "loss",
                lg,
                zrange=zr,
                title=f"{label}: {stages.label(d.get('stage_ref') or {'key': d['stage']})}",
                showscale=i == len(surfaces) - 1,
            ),
        )
        for i, (label, d) in enumerate(surfaces)
    ]
    rows = diff_rows(configs, names, bool(diffonly))
    diff = (
        dash_table.DataTable(  # type: ignore[attr-defined]  # dash.dash_table exports it by a star import mypy does not follow
            data=rows,
            columns=[{"name": c, "id": c} for c in ["field", *names]],
            style_as_list_view=True,
            page_size=60,
            style_cell={"fontFamily": "ui-monospace, monospace", "fontSize": "12px", "textAlign": "left", "whiteSpace": "normal"},
            style_data_conditional=[{"if": {"filter_query": "{_differs} = true"}, "backgroundColor": "#fff7e6"}],
        )
        if rows
        else ui.empty("the configs are identical")
    )
    msg = ui.error("; ".join(problems), title="Some parts are missing") if problems else ""
    return (
        (sp or figures.empty("no results")),
        (ip or figures.empty("no paths")),
        (surf_children or ui.empty("no surface in these studies")),
        diff,
        msg,
    )
