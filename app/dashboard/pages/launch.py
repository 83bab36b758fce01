"""Launch page: a form generated from the study config's JSON Schema, started from a preset or cloned from a study, checked by the API."""

from __future__ import annotations

from typing import Any

import dash
from dash import ALL, Input, Output, State, dcc, html, no_update

from .. import schema_form, ui, urlstate
from ..callbacks import Callbacks
from ..client import ApiError, api
from ..ids import Launch, Shell, pattern

SECTION_ORDER = ("name", "seed", "data", "model", "train", "pruning", "stability", "sweep", "synthetic", "analysis", "device")
OPEN_SECTIONS = ("name", "train", "pruning")
FIELDS = pattern(Launch.FIELD_TYPE, path=ALL, kind=ALL)  # every field of the generated form
FIELD_MSGS = pattern(Launch.FIELD_MSG_TYPE, path=ALL)
callbacks = Callbacks()


def layout(preset: str | None = None, clone: str | None = None, queue: str | None = None, **_q) -> html.Div:
    """Return the launch page; ?preset=NAME starts from a preset, ?clone=ID from a study's config, ?queue=NAME picks the queue."""
    return html.Div(
        className="launch",
        children=[
            dcc.Store(id=Launch.BASE),
            dcc.Store(id=Launch.URL),
            html.Div(className="page-head", children=[html.H1("Launch a study"), html.Div(id=Launch.SOURCE, className="meta")]),
            html.Div("Reading needs no token; launching does: paste an editor token at the top right.", className="hint read-only-hint"),
            html.Div(
                className="form-row",
                children=[
                    html.Label(
                        [
                            "start from preset",
                            dcc.Dropdown(
                                id=Launch.PRESET,
                                value=preset if not clone else None,
                                options=[preset] if preset and not clone else [],
                                placeholder="(defaults)",
                                className="dd",
                            ),
                        ]
                    ),
                    html.Label(
                        [
                            "or clone study",
                            dcc.Input(id=Launch.CLONE, value=clone or "", placeholder="study id", debounce=True, className="input"),
                        ]
                    ),
                    # Filled from GET /api/queues; a linked queue is offered until then (Dash drops a value missing from the options).
                    html.Label(
                        [
                            "queue",
                            dcc.Dropdown(
                                id=Launch.QUEUE,
                                options=[{"label": queue, "value": queue}] if queue else [],
                                value=queue,
                                clearable=False,
                                placeholder="the service's default",
                                className="dd",
                            ),
                        ]
                    ),
                    html.Label(["tags", dcc.Input(id=Launch.TAGS, placeholder="comma,separated", className="input")]),
                ],
            ),
            html.Div(id=Launch.PRESET_HELP, className="hint"),
            html.Div(
                className="launch-grid",
                children=[
                    ui.loading(html.Div(id=Launch.FORM, className="schema-form")),
                    html.Aside(
                        className="launch-side",
                        children=[
                            ui.card(
                                "Check",
                                html.Div(id=Launch.VALIDATION, children=ui.empty("change a field, or press Check")),
                                html.Button("Check with the API", id=Launch.CHECK, className="btn"),
                            ),
                            ui.card("Estimate", html.Div(id=Launch.ESTIMATE)),
                            ui.card(
                                "Launch",
                                html.Div(id=Launch.CHANGES, className="hint"),
                                ui.edit_only(html.Button("Launch study", id=Launch.GO, className="btn btn-primary")),
                                html.Div(id=Launch.RESULT),
                            ),
                        ],
                    ),
                ],
            ),
        ],
    )


def _input(f: schema_form.Field) -> Any:
    fid = pattern(Launch.FIELD_TYPE, path=f.path, kind=f.kind)
    value = schema_form.show(f.kind, f.value)
    if f.kind == "enum":
        return dcc.Dropdown(
            id=fid, options=[{"label": str(o), "value": o} for o in f.options or []], value=value, clearable=f.nullable, className="dd"
        )
    if f.kind == "boolean":
        return dcc.Checklist(id=fid, options=[{"label": "on", "value": "on"}], value=value, inline=True)
    if f.kind in ("integer", "number"):
        return dcc.Input(
            id=fid,
            type="number",
            value=value,
            debounce=True,
            step=1 if f.kind == "integer" else "any",
            className="input",
            placeholder="(none)" if f.nullable else None,
        )
    if f.kind == "json":
        return dcc.Textarea(id=fid, value=value, className="textarea json", rows=1 if len(value) < 60 else 3)
    return dcc.Input(id=fid, type="text", value=value, debounce=True, className="input", placeholder="(none)" if f.nullable else None)


def form(schema: dict[str, Any], config: dict[str, Any]) -> list[Any]:
    """Return the form's sections (one collapsible block per top-level key of the config)."""
    sections: dict[str, list[Any]] = {}
    for f in schema_form.fields(schema, config):
        top = f.path.split(".")[0]
        sections.setdefault(top, []).append(
            html.Div(
                className="field",
                children=[
                    html.Label(f.path.split(".", 1)[-1] if "." in f.path else f.path, title=f.description, className="field-name"),
                    _input(f),
                    html.Div(f.description, className="field-help") if f.description else None,
                    html.Div(id=pattern(Launch.FIELD_MSG_TYPE, path=f.path), className="field-msg"),
                ],
            )
        )
    order = [k for k in SECTION_ORDER if k in sections] + [k for k in sections if k not in SECTION_ORDER]
    return [html.Details(open=k in OPEN_SECTIONS, className="form-section", children=[html.Summary(k), *sections[k]]) for k in order]


def _values(states: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, str]]:
    values, bad = {}, {}
    for s in states:
        path, kind = s["id"]["path"], s["id"]["kind"]
        try:
            values[path] = schema_form.parse(kind, s.get("value"))
        except ValueError as err:
            bad[path] = str(err)
    return values, bad


def _body(base: dict[str, Any], values: dict[str, Any], tags: str | None) -> dict[str, Any]:
    ov = schema_form.overrides(base["config"], values)
    body: dict[str, Any] = {"overrides": ov}
    if base.get("preset"):
        body["preset"] = base["preset"]
    else:
        body["config"] = base["config"]
    tag_list = [t.strip() for t in (tags or "").split(",") if t.strip()]
    if tag_list:
        body["tags"] = tag_list
    return body


def queue_label(q: dict[str, Any]) -> str:
    """Return a queue as the dropdown shows it: name, whether it is the default, its live workers and waiting jobs."""
    bits = [q["name"] + (" (default)" if q.get("default") else "")]
    workers = q.get("workers")
    if workers is None:
        bits.append("workers unknown (Redis does not answer)")
    elif not workers:
        bits.append("no worker listening: studies wait until one starts")
    else:
        bits.append(f"{len(workers)} worker{'s' if len(workers) != 1 else ''}, {q.get('busy') or 0} busy")
    if q.get("queued"):
        bits.append(f"{q['queued']} job{'s' if q['queued'] != 1 else ''} waiting")
    return " · ".join(bits)


def register(app: dash.Dash) -> None:
    """Register the page and install its callbacks on `app`."""
    dash.register_page(__name__, path="/launch", layout=layout, title="Launch · LMC Lab", name="Launch")
    callbacks.install(app)


urlstate.sync(
    callbacks, Launch.URL, {"preset": (Launch.PRESET, "value"), "clone": (Launch.CLONE, "value"), "queue": (Launch.QUEUE, "value")}
)


@callbacks.callback(
    Output(Launch.QUEUE, "options"),
    Output(Launch.QUEUE, "value"),
    Input(Launch.BASE, "data"),
    State(Launch.QUEUE, "value"),
    State(Shell.TOKEN, "data"),
)
def queues(base: dict[str, Any] | None, current: str | None, token: str | None) -> tuple[Any, Any]:
    """Return the queue choices (GET /api/queues) and the chosen one."""
    try:
        rows = api(token).queues()
    except ApiError:
        return no_update, no_update  # the API's default queue is used when the form sends none
    names = [q["name"] for q in rows]
    default = next((q["name"] for q in rows if q["default"]), names[0] if names else None)
    # The user's (or the link's) choice first, then the cloned study's queue, then the service's default.
    value = next((v for v in (current, (base or {}).get("queue"), default) if v in names), None)
    return [{"label": queue_label(q), "value": q["name"]} for q in rows], value


@callbacks.callback(Output(Launch.PRESET, "options"), Input(Launch.PRESET, "id"), State(Shell.TOKEN, "data"))
def presets(_id: str, token: str | None) -> list[dict[str, str]]:
    """Return the preset choices, each with its description as the tooltip."""
    try:
        return [{"label": p["name"], "value": p["name"], "title": p["description"]} for p in api(token).presets()]
    except ApiError:
        return []


@callbacks.callback(
    Output(Launch.FORM, "children"),
    Output(Launch.BASE, "data"),
    Output(Launch.SOURCE, "children"),
    Output(Launch.PRESET_HELP, "children"),
    Input(Launch.PRESET, "value"),
    Input(Launch.CLONE, "value"),
    State(Shell.TOKEN, "data"),
)
def build(preset: str | None, clone: str | None, token: str | None) -> tuple[Any, Any, Any, Any]:
    """Return the form generated from the config's JSON Schema, filled from a study (clone), a preset or the defaults."""
    client = api(token)
    try:
        schema = client.schema()
        if clone:
            src = client.study(clone.strip())
            base = {"config": src["config"], "clone": src["id"], "preset": None, "queue": src.get("queue")}
            source: Any = [
                "cloning ",
                dcc.Link(src["name"], href=f"/study/{src['id']}"),
                f" (run {src['run_id']}): edit what should change",
            ]
            help_text = ""
        elif preset:
            p = next((p for p in client.presets() if p["name"] == preset), None)
            if p is None:
                return ui.error(f"no preset {preset!r}"), None, "", ""
            base = {"config": p["config"], "preset": preset, "clone": None}
            source, help_text = f"from preset {preset} (run {p['run_id']})", p["description"]
        else:
            base = {"config": client.validate({"config": {}})["config"], "preset": None, "clone": None}
            source, help_text = "from the defaults", ""
    except ApiError as err:
        return ui.error(err.message), None, "", ""
    return form(schema, base["config"]), base, source, help_text


@callbacks.callback(
    Output(Launch.VALIDATION, "children"),
    Output(Launch.ESTIMATE, "children"),
    Output(Launch.CHANGES, "children"),
    Output(FIELD_MSGS, "children"),
    Input(FIELDS, "value"),
    Input(Launch.CHECK, "n_clicks"),
    Input(Launch.BASE, "data"),
    State(FIELDS, "id"),
    State(Launch.TAGS, "value"),
    State(Shell.TOKEN, "data"),
)
def check(
    vals: list[Any], _n: int | None, base: dict[str, Any] | None, ids: list[dict[str, str]], tags: str | None, token: str | None
) -> tuple[Any, Any, Any, list[str]]:
    """Return the API's verdict on the form (run id, studies that ran it), the cost estimate, the changes, and per-field errors."""
    paths = [o["id"]["path"] for o in dash.ctx.outputs_list[3]]
    msgs = dict.fromkeys(paths, "")
    if not base:
        return ui.empty("loading the form…"), "", "", [""] * len(paths)
    values, bad = _values([{"id": i, "value": v} for i, v in zip(ids, vals, strict=True)])
    if bad:
        msgs.update(bad)
        return ui.error("; ".join(f"{k}: {v}" for k, v in bad.items()), title="Fix first"), "", "", [msgs[p] for p in paths]
    body = _body(base, values, tags)
    changes = ", ".join(f"{k} = {v!r}" for k, v in body["overrides"].items()) or "no change"
    try:
        out = api(token).validate(body)
    except ApiError as err:
        for e in err.fields:
            loc = str(e.get("loc", "")).removeprefix("config.").removeprefix("overrides.")
            if loc in msgs:
                msgs[loc] = e.get("msg", "")
        return ui.error(err.message), "", f"changes: {changes}", [msgs[p] for p in paths]
    est = schema_form.estimate(out["config"])
    existing = out.get("existing") or []
    verdict = [html.Div(["valid · run id ", html.Code(out["run_id"])])]
    if existing:
        verdict.append(
            html.Div(
                [
                    "already run by ",
                    *[dcc.Link(e, href=f"/study/{e}", className="mono") for e in existing[:3]],
                    " (finished stages will be reused)",
                ],
                className="hint",
            )
        )
    estimate = html.Div(
        [
            html.Div(f"{est['epochs']} epochs × {est['rounds']} rounds × {est['mask_sources']} mask sources", className="big"),
            html.Div(
                f"≈ {est['copy_trainings']} copy trainings ({est['pairs']} seed pair(s), {est['rewind_steps']} rewind step(s)), "
                f"{est['epoch_units']} epochs in all"
                + (f"; {est['synthetic_sets']} synthetic set(s) to make" if est["synthetic_sets"] else "")
            ),
        ]
    )
    return ui.ok(verdict), estimate, f"changes: {changes}", [msgs[p] for p in paths]


@callbacks.callback(
    Output(Launch.RESULT, "children"),
    Output(Shell.NAV, "href", allow_duplicate=True),
    Input(Launch.GO, "n_clicks"),
    State(FIELDS, "value"),
    State(FIELDS, "id"),
    State(Launch.BASE, "data"),
    State(Launch.TAGS, "value"),
    State(Launch.QUEUE, "value"),
    State(Shell.TOKEN, "data"),
    prevent_initial_call=True,
)
def go(
    n: int | None,
    vals: list[Any],
    ids: list[dict[str, str]],
    base: dict[str, Any] | None,
    tags: str | None,
    queue: str | None,
    token: str | None,
) -> tuple[Any, Any]:
    """Create (or clone) and queue the study; return a link to it and send the browser to its page."""
    if not n:  # inserted by the page container, not clicked
        return no_update, no_update
    if not base:
        return ui.error("the form is not ready"), no_update
    values, bad = _values([{"id": i, "value": v} for i, v in zip(ids, vals, strict=True)])
    if bad:
        return ui.error("; ".join(f"{k}: {v}" for k, v in bad.items()), title="Fix first"), no_update
    body = _body(base, values, tags)
    if queue:
        body["queue"] = queue
    try:
        client = api(token)
        if base.get("clone"):
            body.pop("config", None)
            body.pop("preset", None)
            study = client.clone(base["clone"], body)
        else:
            study = client.create(body)
    except ApiError as err:
        return ui.error(err.message), no_update
    return ui.ok(["queued ", dcc.Link(study["name"], href=f"/study/{study['id']}")]), f"/study/{study['id']}"
