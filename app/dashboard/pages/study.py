"""Study page: live progress while it runs, then its results as stages finish (sparsity, paths, landscape, Hessian, synthetic sets)."""

from __future__ import annotations

import json

import dash
from dash import Input, Output, Patch, State, dcc, html, no_update

from .. import figures, palette, stages, synthetic, ui, urlstate
from ..client import ApiError

TERMINAL = ("finished", "failed", "cancelled")
POLL_MS = 2000
FIRST_POLL_MS = 50
PATH = "/study/<study_id>"
# The graph holding each publishable figure on this page (rendered as the gallery card's PNG), and the picture's size.
THUMB_GRAPHS = {"sparsity": "st-barrier-graph", "interpolation": "st-interp", "surface": "st-contour", "hessian": "st-spectrum"}
THUMB_SIZE = (480, 320)
TABS = ("sparsity", "paths", "landscape", "hessian", "synthetic")


_API = None  # set by register(): the anonymous client the layout prefetches with


def _prefetch(study_id: str) -> dict:
    """Return what the first callbacks would fetch (study, progress, revision, figure index, results), read while the
    layout is built.

    Without it a page waits for a chain of callback round trips (poll -> revision -> index -> stage choice) before
    the first figure request; with it every figure is requested at once. Returns {} when anonymous reads are off or
    the API fails: the first poll then comes at once and the callbacks fetch as usual.
    """
    if _API is None or not study_id:
        return {}
    try:
        client = _API(None)
        study, p = client.study(study_id), client.progress(study_id)
        rev = f"{p.get('done')}:{study['status']}"
        return {"study": study, "progress": p, "rev": rev, "index": {**client.figures_index(study_id), "_rev": rev},
                "results": client.results(study_id)}
    except Exception:  # noqa: BLE001  (any failure: fall back to the callback chain)
        return {}


def _first(wanted: str | None, available: list[str]) -> str | None:
    return wanted if wanted in available else (available[0] if available else wanted)


def _publishable(index: dict) -> list[dict[str, str]]:
    return [{"label": n, "value": n} for n in ("sparsity", "interpolation", "surface", "hessian") if n in index]


def _keep(value: str | None) -> list[dict[str, str]]:
    # Dash 4 dropdowns drop a value missing from their options: offer the linked one until the real list arrives.
    return stages.options([value]) if value else []


def layout(study_id: str = "", **q) -> html.Div:
    """Return the study page for `study_id`; query parameters restore the view (sources, rounds, stages, toggles)."""
    pre = _prefetch(study_id)
    study = pre.get("study")
    index = pre.get("index") or {}
    tab = urlstate.first(q, "tab", "sparsity")
    tab = tab if tab in TABS else "sparsity"
    return html.Div(className="study", children=[
        dcc.Store(id="st-id", data=study_id),
        dcc.Store(id="st-rev", data=pre.get("rev")),
        dcc.Store(id="st-index", data=pre.get("index")),
        dcc.Store(id="st-results", data=pre.get("results")),
        dcc.Store(id="st-url"),
        # Not polled on load when the layout has the progress already: that poll would hold every figure for a round trip.
        dcc.Interval(id="st-poll", interval=POLL_MS if study else FIRST_POLL_MS, n_intervals=0,
                     disabled=bool(study) and study["status"] in TERMINAL),
        html.Div(className="page-head", children=[
            html.Div([html.H1(id="st-title", children=study["name"] if study else "Study"),
                      html.Div(id="st-meta", className="meta", children=_meta(study) if study else None)]),
            html.Div(className="actions", children=[
                dcc.Link("Clone & edit", href=f"/launch?clone={study_id}", className="btn"),
                dcc.Link("Compare", href=f"/compare?ids={study_id}", className="btn btn-ghost"),
                ui.edit_only(html.Button("Cancel", id="st-cancel", className="btn btn-danger"),
                             html.Button("Retry", id="st-retry", className="btn", title="Queue the same config again: finished stages are reused"),
                             className="inline"),
            ]),
        ]),
        html.Div(id="st-action-msg"),
        ui.card("Progress", ui.loading(html.Div(id="st-progress", children=_progress_view(study, pre["progress"]) if study
                                                else ui.empty("loading progress…"))), id="st-progress-card"),
        # Tabs mount only the chosen tab's graphs: each view draws two to three figures instead of ten, and the
        # others' data still arrives with the page, so switching tabs draws without a round trip.
        dcc.Tabs(id="st-tab", value=tab, className="tabs", children=[
            dcc.Tab(label="Sparsity", value="sparsity", id="st-tab-sparsity", children=_sparsity_tab(q)),
            dcc.Tab(label="Interpolation", value="paths", id="st-tab-paths", children=_paths_tab(q)),
            dcc.Tab(label="Landscape", value="landscape", id="st-tab-landscape", children=_landscape_tab(q, index)),
            dcc.Tab(label="Hessian", value="hessian", id="st-tab-hessian", children=_hessian_tab(q, index)),
            dcc.Tab(label="Synthetic sets", value="synthetic", id="st-tab-synthetic",
                    children=ui.card("Synthetic sets", ui.loading(html.Div(id="st-synthetic", children=ui.empty("no synthetic set yet"))))),
        ]),
        ui.edit_only(ui.card("Publish to the gallery", html.Div(className="form-row", children=[
            html.Label(["figure", dcc.Dropdown(id="pub-figure", options=_publishable(index), placeholder="which figure", className="dd")]),
            html.Label(["title", dcc.Input(id="pub-title", type="text", placeholder="a title for the gallery card", className="input-wide")]),
            html.Label(["tags", dcc.Input(id="pub-tags", type="text", placeholder="comma,separated", className="input")]),
        ]), dcc.Textarea(id="pub-notes", placeholder="notes (what the figure shows, what to look at)", className="textarea"),
            html.Button("Publish", id="pub-go", className="btn btn-primary"), html.Div(id="pub-msg"),
            html.P("Surface and Hessian figures publish the stage selected above.", className="hint"))),
    ])


def _sparsity_tab(q: dict) -> html.Section:
    return ui.card("Accuracy and barrier vs sparsity", html.Div(className="controls", children=[
        dcc.RadioItems(id="st-barrier", options=[{"label": "error barrier", "value": "error_barrier"}, {"label": "loss barrier", "value": "loss_barrier"}],
                       value=urlstate.first(q, "barrier", "error_barrier"), inline=True),
    ]), html.Div(className="grid2", children=[ui.loading(ui.graph("st-accuracy")), ui.loading(ui.graph("st-barrier-graph"))]))


def _paths_tab(q: dict) -> html.Section:
    rounds = urlstate.many(q, "rounds")
    return ui.card("Interpolation curves", html.Div(className="controls", children=[
        html.Label(["mask sources", dcc.Checklist(id="st-sources", value=urlstate.many(q, "sources") or [], inline=True)]),
        html.Label(["rounds", dcc.Checklist(id="st-rounds", value=[int(r) for r in rounds] if rounds else [], inline=True)]),
        html.Label(["quantity", dcc.RadioItems(id="st-quantity", options=["error", "loss"], value=urlstate.first(q, "quantity", "error"), inline=True)]),
        html.Label(["splits", dcc.Checklist(id="st-splits", options=["test", "train"], value=urlstate.many(q, "splits") or ["test", "train"], inline=True)]),
    ]), ui.loading(ui.graph("st-interp")))


def _stage_dropdown(id: str, q: dict, index: dict, kind: str) -> dcc.Dropdown:
    # The linked stage when it exists, else the first finished one; choices from the prefetched index.
    value = _first(urlstate.first(q, kind), index.get(kind) or [])
    return dcc.Dropdown(id=id, value=value, options=stages.options(index[kind]) if index.get(kind) else _keep(value), clearable=False,
                        className="dd-wide")


def _landscape_tab(q: dict, index: dict) -> html.Section:
    return ui.card("2-D loss landscape", html.Div(className="controls", children=[
        html.Label(["stage", _stage_dropdown("st-surface-stage", q, index, "surface")]),
        html.Label(["quantity", dcc.RadioItems(id="st-surface-q", options=["loss", "error"], value=urlstate.first(q, "sq", "loss"), inline=True)]),
        dcc.Checklist(id="st-log", options=[{"label": "log scale", "value": "log"}], value=["log"] if urlstate.first(q, "log") in ("log", "1") else [],
                      inline=True),
    ]), html.Div(id="st-surface-msg"),
        html.Div(className="grid2", children=[ui.loading(ui.graph("st-contour")), ui.loading(ui.graph("st-surface3d"))]),
        html.P("Hover either plot: the red cross marks the same point on the other.", className="hint"))


def _hessian_tab(q: dict, index: dict) -> html.Section:
    return ui.card("Hessian", ui.loading(ui.graph("st-hessian-rounds")), html.Div(className="controls", children=[
        html.Label(["stage", _stage_dropdown("st-hessian-stage", q, index, "hessian")]),
    ]), html.Div(id="st-hessian-numbers", className="numbers"),
        html.Div(className="grid2", children=[ui.loading(ui.graph("st-spectrum")), ui.loading(ui.graph("st-diagonal"))]))


def _progress_view(study: dict, p: dict) -> list:
    done, total = p.get("done") or 0, p.get("total") or 0
    pct = 100.0 * done / total if total else 0.0
    rows = [html.Div(className="progress-line", children=[
        html.Span(f"{done} of {total or '?'} stages", className="progress-label"),
        html.Div(html.Div(style={"width": f"{pct:.1f}%"}, className=f"bar-fill bar-{p.get('status')}"), className="bar", id="st-overall-bar"),
        html.Span(f"ETA {ui.fmt_seconds(p.get('eta_s'))}" if p.get("status") == "running" else p.get("status"), className="progress-eta"),
    ])]
    for job in p.get("running", []):
        step, tot = job.get("step") or 0, job.get("total")
        frac = 100.0 * step / tot if tot else 0.0
        rows.append(html.Div(className="progress-line stage", children=[
            html.Span(job["key"], className="progress-label mono"),
            html.Div(html.Div(style={"width": f"{frac:.1f}%"}, className="bar-fill bar-running"), className="bar"),
            html.Span(f"{step}/{tot} · ETA {ui.fmt_seconds(job.get('eta_s'))}" if tot else (job.get("message") or "running"), className="progress-eta"),
        ]))
    for job in p.get("failed", []):
        rows.append(ui.error(job.get("error") or "failed", title=f"stage {job['key']} failed"))
    if p.get("error"):
        rows.append(ui.error(p["error"], title="study error"))
    tail = p.get("log_tail") or []
    rows.append(html.Details(open=study.get("status") not in TERMINAL, children=[
        html.Summary(f"log ({len(tail)} last lines)"), html.Pre("\n".join(tail[-30:]) or "(empty)", className="log")]))
    return rows


def _meta(study: dict) -> list:
    bits = [ui.badge(study["status"]), html.Span(f"id {study['id']}", className="mono"), html.Span(f"run {study['run_id']}", className="mono")]
    if study.get("preset"):
        bits.append(html.Span(f"preset {study['preset']}"))
    if study.get("queue"):
        bits.append(html.Span(f"queue {study['queue']}", className="mono", title="the RQ queue its stages run on"))
    if study.get("owner"):
        bits.append(html.Span(f"by {study['owner']}"))
    bits += [html.Span(t, className="tag") for t in study.get("tags", [])]
    if study.get("parent_id"):
        bits.append(dcc.Link("parent study", href=f"/study/{study['parent_id']}"))
    return bits


def register(app, api) -> None:
    """Register the page and its callbacks."""
    global _API
    _API = api
    dash.register_page(__name__, path_template=PATH, layout=layout, title="Study · LMC Lab", name="Study")
    urlstate.sync(app, "st-url", {"sources": ("st-sources", "value"), "rounds": ("st-rounds", "value"), "quantity": ("st-quantity", "value"),
                                  "splits": ("st-splits", "value"), "surface": ("st-surface-stage", "value"), "sq": ("st-surface-q", "value"),
                                  "log": ("st-log", "value"), "hessian": ("st-hessian-stage", "value"), "barrier": ("st-barrier", "value"),
                                  "tab": ("st-tab", "value")})

    @app.callback(Output("st-title", "children"), Output("st-meta", "children"), Output("st-progress", "children"),
                  Output("st-poll", "disabled"), Output("st-rev", "data"), Output("st-poll", "interval"),
                  Input("st-poll", "n_intervals"), State("st-id", "data"), State("token", "data"), State("st-rev", "data"),
                  prevent_initial_call=True)
    def poll(_n, study_id, token, rev):
        try:
            client = api(token)
            study = client.study(study_id)
            p = client.progress(study_id)
        except ApiError as err:
            return "Study", "", ui.error(err.message), err.status == 404, no_update, POLL_MS
        new_rev = f"{p.get('done')}:{study['status']}"
        return (study["name"], _meta(study), _progress_view(study, p), study["status"] in TERMINAL,
                new_rev if new_rev != rev else no_update, POLL_MS)

    # Not on load: the layout's prefetch holds this revision's index, or the first poll (at once when it does not)
    # changes the revision. An initial call answering no_update would also keep the callbacks it held from ever running.
    @app.callback(Output("st-index", "data"), Output("st-results", "data"), Input("st-rev", "data"), State("st-id", "data"), State("token", "data"),
                  State("st-index", "data"), prevent_initial_call=True)
    def refresh(rev, study_id, token, index):
        if rev and index and index.get("_rev") == rev:  # the layout prefetched this revision already
            return no_update, no_update
        try:
            client = api(token)
            return {**client.figures_index(study_id), "_rev": rev}, client.results(study_id)
        except ApiError as err:
            return {"error": err.message}, {"error": err.message}

    @app.callback(Output("st-accuracy", "figure"), Output("st-barrier-graph", "figure"), Input("st-index", "data"), Input("st-barrier", "value"),
                  State("st-id", "data"), State("token", "data"))
    def sparsity(index, metric, study_id, token):
        if not index or "sparsity" not in index:
            msg = index.get("error") if index and index.get("error") else "no round has finished yet"
            return figures.empty(msg), figures.empty(msg)
        try:
            data = api(token).figure(study_id, "sparsity")
        except ApiError as err:
            return figures.empty(err.message), figures.empty(err.message)
        return figures.sparsity(data, "accuracy_mean"), figures.sparsity(data, metric)

    # One callback fills the choices and draws the curves: split in two, the figure waited for the choices' round trip.
    # The checklists are both its inputs and outputs (a circular callback Dash allows within one callback).
    @app.callback(Output("st-sources", "options"), Output("st-sources", "value"), Output("st-rounds", "options"), Output("st-rounds", "value"),
                  Output("st-interp", "figure"),
                  Input("st-sources", "value"), Input("st-rounds", "value"), Input("st-quantity", "value"), Input("st-splits", "value"),
                  Input("st-index", "data"), State("st-sources", "options"), State("st-rounds", "options"), State("st-id", "data"),
                  State("token", "data"))
    def interp(sources, rounds, quantity, splits, index, old_sources, old_rounds, study_id, token):
        if not index or "interpolation" not in index:
            return [], no_update, [], no_update, figures.empty("no path has finished yet")
        try:
            curves = api(token).figure(study_id, "interpolation")["curves"]
        except ApiError as err:
            return [], no_update, [], no_update, figures.empty(err.message)
        all_sources = sorted({c["source"] for c in curves}, key=lambda s: (s != "dense", s))
        all_rounds = sorted({c["round"] for c in curves})
        keep_s, keep_r = _grow(sources, old_sources, all_sources), _grow(rounds, old_rounds, all_rounds)
        chosen = figures.select_curves(curves, keep_s or None, keep_r or None)
        return ([{"label": html.Span(palette.label(s), style={"color": palette.colour(s)}), "value": s} for s in all_sources], keep_s,
                [{"label": f"r{r}", "value": r} for r in all_rounds], keep_r, figures.interpolation(chosen, quantity, splits or ["test"]))

    @app.callback(Output("st-surface-stage", "options"), Output("st-surface-stage", "value"),
                  Output("st-hessian-stage", "options"), Output("st-hessian-stage", "value"), Output("pub-figure", "options"),
                  Input("st-index", "data"), State("st-surface-stage", "value"), State("st-hessian-stage", "value"), prevent_initial_call=True)
    def stage_options(index, sstage, hstage):
        index = index or {}
        surf, hess = index.get("surface") or [], index.get("hessian") or []
        pub = _publishable(index)
        new_s = sstage if sstage in surf else (surf[0] if surf else None)
        new_h = hstage if hstage in hess else (hess[0] if hess else None)
        # Not called on page load (the layout fills the choices from its prefetched index, and an initial call would hold
        # the surface and Hessian callbacks for a round trip); called whenever the index changes. Always send the values:
        # a no_update would leave the callbacks that wait on them never called.
        return stages.options(surf), new_s, stages.options(hess), new_h, pub

    @app.callback(Output("st-contour", "figure"), Output("st-surface3d", "figure"), Output("st-surface-msg", "children"),
                  Input("st-surface-stage", "value"), Input("st-surface-q", "value"), Input("st-log", "value"),
                  State("st-id", "data"), State("token", "data"))
    def landscape(stage, quantity, log, study_id, token):
        data, failed = _stage_figure(api(token), study_id, "surface", stage)
        if failed:
            return failed
        lg = "log" in (log or [])
        note = html.Div(f"plane: {data.get('plane')} · split: {data.get('split')} · {data.get('resolution')}×{data.get('resolution')} grid · "
                        f"loss {data.get('loss_min'):.3g} to {data.get('loss_max'):.3g}", className="hint") if data.get("loss_min") is not None else ""
        return figures.contour(data, quantity, lg), figures.surface3d(data, quantity, lg), note

    @app.callback(Output("st-surface3d", "figure", allow_duplicate=True), Input("st-contour", "hoverData"),
                  prevent_initial_call=True)
    def cursor_to_surface(hover):
        return _cursor(hover, three_d=True)

    @app.callback(Output("st-contour", "figure", allow_duplicate=True), Input("st-surface3d", "hoverData"),
                  prevent_initial_call=True)
    def cursor_to_contour(hover):
        return _cursor(hover, three_d=False)

    @app.callback(Output("st-hessian-rounds", "figure"), Input("st-results", "data"))
    def hessian_rounds(results):
        if not results or results.get("error"):
            return figures.empty((results or {}).get("error") or "no results yet")
        return figures.hessian_by_round(results.get("analysis") or [])

    @app.callback(Output("st-spectrum", "figure"), Output("st-diagonal", "figure"), Output("st-hessian-numbers", "children"),
                  Input("st-hessian-stage", "value"), State("st-id", "data"), State("token", "data"))
    def hessian(stage, study_id, token):
        data, failed = _stage_figure(api(token), study_id, "hessian", stage)
        if failed:
            return failed
        colour = palette.colour(stages.source_of(stage))
        eig = ", ".join(f"{v:.4g}" for v in data.get("top_eigenvalues") or [])
        nums = [html.Span(f"top eigenvalues: {eig or '–'}"),
                html.Span(f"trace: {data['trace']:.4g} ± {data.get('trace_stderr') or 0:.2g}" if data.get("trace") is not None else "trace: –"),
                html.Span(f"{data.get('active', '?')} of {data.get('parameters', '?')} weights unpruned"),
                html.Span(f"{data.get('hvps', '?')} Hessian-vector products on {data.get('examples', '?')} examples")]
        return figures.spectrum(data, colour=colour), figures.diagonal_histogram(data), nums

    @app.callback(Output("st-synthetic", "children"), Input("st-results", "data"), State("st-id", "data"), State("token", "data"))
    def synthetic_sets(results, study_id, token):
        sets = (results or {}).get("synthetic") or []
        if not sets:
            return ui.empty("this study has no synthetic set (or none has finished yet)")
        return synthetic.view(api(token), study_id, sets)

    @app.callback(Output("st-action-msg", "children"), Output("nav", "href", allow_duplicate=True), Output("st-poll", "disabled", allow_duplicate=True),
                  Input("st-cancel", "n_clicks"), Input("st-retry", "n_clicks"), State("st-id", "data"), State("token", "data"),
                  prevent_initial_call=True)
    def act(c, r, study_id, token):
        if not (c or r):  # the page container inserts the buttons: that is not a click
            return no_update, no_update, no_update
        try:
            if dash.ctx.triggered_id == "st-cancel":
                out = api(token).cancel(study_id)
                return ui.ok(f"cancelled; {out.get('jobs_cancelled', 0)} job(s) stopped"), no_update, False
            # Retry runs this study again in place (same run directory): finished stages are reused, only the rest runs.
            # A study that is still active or already finished gets the API's 409, which says what to do instead.
            study = api(token).retry(study_id)
            return ui.ok(f"queued again on {study.get('queue') or 'the default queue'}: finished stages are reused, "
                         "only the unfinished ones run"), no_update, False  # polling resumes
        except ApiError as err:
            return ui.error(err.message), no_update, no_update

    # Publishing, step 1 in the browser: render the chosen figure (Plotly.toImage, PNG, THUMB_SIZE) for the gallery card.
    # The figure comes from its graph's `figure` property, so it renders even when its tab is not shown. The request, with
    # the picture as a data URL, goes through a data-* property of the message box, which carries it to step 2 on the
    # server. A figure not drawn yet, or one that fails to render, is published without a picture (the card draws a preview).
    names = list(THUMB_GRAPHS)
    app.clientside_callback(
        f"""async function(n, figure, ...figs) {{
            if (!n) return window.dash_clientside.no_update;
            const out = {{n: n, figure: figure || null, png: null, error: null}};
            const fig = figure ? figs[{json.dumps(names)}.indexOf(figure)] : null;
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
        Output("pub-msg", "data-request"), Input("pub-go", "n_clicks"), State("pub-figure", "value"),
        *[State(THUMB_GRAPHS[name], "figure") for name in names], prevent_initial_call=True)

    @app.callback(Output("pub-msg", "children"), Input("pub-msg", "data-request"), State("pub-title", "value"),
                  State("pub-tags", "value"), State("pub-notes", "value"), State("st-surface-stage", "value"), State("st-hessian-stage", "value"),
                  State("st-id", "data"), State("token", "data"), prevent_initial_call=True)
    def publish(request, title, tags, notes, sstage, hstage, study_id, token):
        # Step 2 on the server: publish the entry, with the browser's PNG as its thumbnail when step 1 made one.
        try:
            req = json.loads(request) if request else None
        except ValueError:
            req = None
        if not req:
            return no_update
        figure = req.get("figure")
        if not figure:
            return ui.error("choose the figure to publish", title="Publish")
        body = {"study_id": study_id, "kind": "figure", "figure": figure, "title": (title or "").strip() or f"{figure} figure",
                "tags": [t.strip() for t in (tags or "").split(",") if t.strip()], "notes": notes or ""}
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
        note = "" if entry.get("thumbnail") else f"  (no thumbnail: {req.get('error') or 'the figure is not drawn yet'}; the card shows a drawn preview)"
        return ui.ok(["published: ", dcc.Link(entry["title"], href=f"/gallery/{entry['id']}", id="pub-permalink"),
                      html.Span(f"  (permalink /gallery/{entry['id']})", className="mono"), html.Span(note, className="hint")])


def _stage_figure(client, study_id: str, name: str, stage: str | None) -> tuple[dict | None, tuple | None]:
    """Return (the stage's figure data, None), or (None, the two empty figures and message to show instead)."""
    label = {"surface": "surface", "hessian": "Hessian"}[name]
    if not stage:
        e = figures.empty(f"no {label} stage has finished yet")
        return None, (e, e, "")
    try:
        return client.figure(study_id, name, stage=stage), None
    except ApiError as err:
        e = figures.empty(f"{label} unavailable")
        return None, (e, e, ui.error(err.message))


def _grow(chosen: list | None, old_options: list | None, now: list) -> list:
    """Return the new selection: one that was "everything offered" grows with the study; a narrower one (the user's,
    or the link's on first load) stays, as far as it still exists."""
    kept = [v for v in chosen or [] if v in now]
    if old_options and set(chosen or []) >= {o["value"] for o in old_options}:
        return now
    return kept or now


def _cursor(hover, three_d: bool):
    # The hovered point of trace 0 carries x, y and z already: no round trip to the API on every mouse move.
    if not hover or not hover.get("points"):
        return no_update
    pt = hover["points"][0]
    if pt.get("curveNumber", 0) != 0 or "x" not in pt or "y" not in pt:
        return no_update
    patch = Patch()
    patch["data"][2]["x"] = [pt["x"]]
    patch["data"][2]["y"] = [pt["y"]]
    if three_d:
        patch["data"][2]["z"] = [pt.get("z")]
    return patch
