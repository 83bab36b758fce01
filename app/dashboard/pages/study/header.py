"""The study page's header and progress card: name, status and metadata, live progress while it runs, cancel and retry.

The poll here drives the page: it refreshes the header and the progress, and moves the revision ("done:status") that
the figure index and results follow (index.py).
"""

from __future__ import annotations

from typing import Any

import dash
from dash import Input, Output, State, dcc, html, no_update

from ... import ui
from ...callbacks import Callbacks
from ...client import ApiError, api
from ...ids import Shell, Study

TERMINAL = ("finished", "failed", "cancelled")
POLL_MS = 2000
FIRST_POLL_MS = 50
callbacks = Callbacks()


def revision(study: dict[str, Any], progress: dict[str, Any]) -> str:
    """Return the revision of a study's results: it changes when a stage finishes or the status changes."""
    return f"{progress.get('done')}:{study['status']}"


def poller(study: dict[str, Any] | None) -> dcc.Interval:
    """Return the poll of the page; not polled on load when the layout has the progress already (that poll would hold every
    figure for a round trip), and off once a prefetched study has ended."""
    return dcc.Interval(
        id=Study.POLL,
        interval=POLL_MS if study else FIRST_POLL_MS,
        n_intervals=0,
        disabled=study is not None and study["status"] in TERMINAL,
    )


def head(study_id: str, study: dict[str, Any] | None, progress: dict[str, Any] | None) -> list[Any]:
    """Return the page head (title, metadata, actions), the action message and the progress card, filled when prefetched."""
    return [
        html.Div(
            className="page-head",
            children=[
                html.Div(
                    [
                        html.H1(id=Study.TITLE, children=study["name"] if study else "Study"),
                        html.Div(id=Study.META, className="meta", children=meta(study) if study else None),
                    ]
                ),
                html.Div(
                    className="actions",
                    children=[
                        dcc.Link("Clone & edit", href=f"/launch?clone={study_id}", className="btn"),
                        dcc.Link("Compare", href=f"/compare?ids={study_id}", className="btn btn-ghost"),
                        ui.edit_only(
                            html.Button("Cancel", id=Study.CANCEL, className="btn btn-danger"),
                            html.Button(
                                "Retry", id=Study.RETRY, className="btn", title="Queue the same config again: finished stages are reused"
                            ),
                            className="inline",
                        ),
                    ],
                ),
            ],
        ),
        html.Div(id=Study.ACTION_MSG),
        ui.card(
            "Progress",
            ui.loading(
                html.Div(
                    id=Study.PROGRESS,
                    children=progress_view(study, progress) if study and progress is not None else ui.empty("loading progress…"),
                )
            ),
            id=Study.PROGRESS_CARD,
        ),
    ]


def progress_view(study: dict[str, Any], p: dict[str, Any]) -> list[Any]:
    """Return the progress card's rows: overall bar with ETA, one bar per running stage, failures, and the log's tail."""
    done, total = p.get("done") or 0, p.get("total") or 0
    pct = 100.0 * done / total if total else 0.0
    rows: list[Any] = [
        html.Div(
            className="progress-line",
            children=[
                html.Span(f"{done} of {total or '?'} stages", className="progress-label"),
                html.Div(
                    html.Div(style={"width": f"{pct:.1f}%"}, className=f"bar-fill bar-{p.get('status')}"),
                    className="bar",
                    id=Study.OVERALL_BAR,
                ),
                html.Span(
                    f"ETA {ui.fmt_seconds(p.get('eta_s'))}" if p.get("status") == "running" else p.get("status"), className="progress-eta"
                ),
            ],
        )
    ]
    for job in p.get("running", []):
        step, tot = job.get("step") or 0, job.get("total")
        frac = 100.0 * step / tot if tot else 0.0
        rows.append(
            html.Div(
                className="progress-line stage",
                children=[
                    html.Span(job["key"], className="progress-label mono"),
                    html.Div(html.Div(style={"width": f"{frac:.1f}%"}, className="bar-fill bar-running"), className="bar"),
                    html.Span(
                        f"{step}/{tot} · ETA {ui.fmt_seconds(job.get('eta_s'))}" if tot else (job.get("message") or "running"),
                        className="progress-eta",
                    ),
                ],
            )
        )
    for job in p.get("failed", []):
        rows.append(ui.error(job.get("error") or "failed", title=f"stage {job['key']} failed"))
    if p.get("error"):
        rows.append(ui.error(p["error"], title="study error"))
    tail = p.get("log_tail") or []
    rows.append(
        html.Details(
            open=study.get("status") not in TERMINAL,
            children=[html.Summary(f"log ({len(tail)} last lines)"), html.Pre("\n".join(tail[-30:]) or "(empty)", className="log")],
        )
    )
    return rows


def meta(study: dict[str, Any]) -> list[Any]:
    """Return the header's metadata: status badge, ids, preset, queue, owner, tags and the parent study."""
    bits: list[Any] = [
        ui.badge(study["status"]),
        html.Span(f"id {study['id']}", className="mono"),
        html.Span(f"run {study['run_id']}", className="mono"),
    ]
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


@callbacks.callback(
    Output(Study.TITLE, "children"),
    Output(Study.META, "children"),
    Output(Study.PROGRESS, "children"),
    Output(Study.POLL, "disabled"),
    Output(Study.REV, "data"),
    Output(Study.POLL, "interval"),
    Input(Study.POLL, "n_intervals"),
    State(Study.ID, "data"),
    State(Shell.TOKEN, "data"),
    State(Study.REV, "data"),
    prevent_initial_call=True,
)
def poll(_n: int, study_id: str, token: str | None, rev: str | None) -> tuple[Any, ...]:
    """Return the header and progress now, whether to stop polling, the new revision (no_update when unchanged), the poll period."""
    try:
        client = api(token)
        study = client.study(study_id)
        p = client.progress(study_id)
    except ApiError as err:
        return "Study", "", ui.error(err.message), err.status == 404, no_update, POLL_MS
    new_rev = revision(study, p)
    return (
        study["name"],
        meta(study),
        progress_view(study, p),
        study["status"] in TERMINAL,
        new_rev if new_rev != rev else no_update,
        POLL_MS,
    )


@callbacks.callback(
    Output(Study.ACTION_MSG, "children"),
    Output(Shell.NAV, "href", allow_duplicate=True),
    Output(Study.POLL, "disabled", allow_duplicate=True),
    Input(Study.CANCEL, "n_clicks"),
    Input(Study.RETRY, "n_clicks"),
    State(Study.ID, "data"),
    State(Shell.TOKEN, "data"),
    prevent_initial_call=True,
)
def act(c: int | None, r: int | None, study_id: str, token: str | None) -> tuple[Any, Any, Any]:
    """Cancel or retry the study; return what happened, and turn polling back on."""
    if not (c or r):  # the page container inserts the buttons: that is not a click
        return no_update, no_update, no_update
    try:
        if dash.ctx.triggered_id == Study.CANCEL:
            out = api(token).cancel(study_id)
            return ui.ok(f"cancelled; {out.get('jobs_cancelled', 0)} job(s) stopped"), no_update, False
        # Retry runs this study again in place (same run directory): finished stages are reused, only the rest runs.
        # A study that is still active or already finished gets the API's 409, which says what to do instead.
        study = api(token).retry(study_id)
        return (
            ui.ok(f"queued again on {study.get('queue') or 'the default queue'}: finished stages are reused, only the unfinished ones run"),
            no_update,
            False,
        )  # polling resumes
    except ApiError as err:
        return ui.error(err.message), no_update, no_update
