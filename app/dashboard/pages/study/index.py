"""The study page's shared state: the figure index and results of the current revision, and the stage choices that follow them.

The index store holds the API's figure index ({figures: {figure: stage keys}, stage_refs: {figure: readings}}) with the
revision it belongs to under "_rev", or {"error": message}. Stage labels come from the readings (stage_ref): the page
never parses a stage key.
"""

from __future__ import annotations

from typing import Any

from dash import Input, Output, State, dcc, no_update

from ... import figures, stages, ui, urlstate
from ...callbacks import Callbacks
from ...client import ApiError, Client, api
from ...ids import Shell, Study

PUBLISHABLE = ("sparsity", "interpolation", "surface", "hessian")
callbacks = Callbacks()


def available(index: dict[str, Any] | None, figure: str) -> bool:
    """Return True when the index says the study can draw `figure` now."""
    return figure in ((index or {}).get("figures") or {})


def stage_keys(index: dict[str, Any] | None, figure: str) -> list[str]:
    """Return the stage keys `figure` can be drawn for (finished surface or Hessian stages), in the API's order."""
    return list(((index or {}).get("figures") or {}).get(figure) or [])


def stage_options(index: dict[str, Any] | None, figure: str) -> list[dict[str, str]]:
    """Return dropdown options for the stages of `figure`, labelled from the API's readings of their keys."""
    refs = {r["key"]: r for r in ((index or {}).get("stage_refs") or {}).get(figure) or []}
    return stages.options(refs.get(key) or {"key": key} for key in stage_keys(index, figure))


def publishable(index: dict[str, Any] | None) -> list[dict[str, str]]:
    """Return the figures the study can publish now, as dropdown options."""
    return [{"label": n, "value": n} for n in PUBLISHABLE if available(index, n)]


def first(wanted: str | None, choices: list[str]) -> str | None:
    """Return `wanted` when it is among `choices`, else the first choice (else `wanted`, e.g. a linked stage not finished yet)."""
    return wanted if wanted in choices else (choices[0] if choices else wanted)


def keep(value: str | None) -> list[dict[str, str]]:
    """Return the options that offer `value` alone, labelled by its key, until the index's list arrives.

    Dash 4 dropdowns drop a value missing from their options: a linked stage must be offered to survive.
    """
    return stages.options([{"key": value}]) if value else []


def stage_dropdown(id: str, q: dict[str, Any], index: dict[str, Any], figure: str) -> dcc.Dropdown:
    """Return the stage chooser of `figure`: the linked stage when it exists, else the first finished one; choices from the
    prefetched index."""
    value = first(urlstate.first(q, figure), stage_keys(index, figure))
    return dcc.Dropdown(
        id=id,
        value=value,
        options=stage_options(index, figure) if stage_keys(index, figure) else keep(value),
        clearable=False,
        className="dd-wide",
    )


def stage_figure(client: Client, study_id: str, name: str, stage: str | None) -> dict[str, Any] | tuple[Any, Any, Any]:
    """Return the stage's figure data, or (empty figure, empty figure, message) to show instead when there is none."""
    label = {"surface": "surface", "hessian": "Hessian", "sharpness": "sharpness"}[name]
    if not stage:
        e = figures.empty(f"no {label} stage has finished yet")
        return e, e, ""
    try:
        return client.figure(study_id, name, stage=stage)
    except ApiError as err:
        e = figures.empty(f"{label} unavailable")
        return e, e, ui.error(err.message)


# Not on load: the layout's prefetch holds this revision's index, or the first poll (at once when it does not)
# changes the revision. An initial call answering no_update would also keep the callbacks it held from ever running.
@callbacks.callback(
    Output(Study.INDEX, "data"),
    Output(Study.RESULTS, "data"),
    Input(Study.REV, "data"),
    State(Study.ID, "data"),
    State(Shell.TOKEN, "data"),
    State(Study.INDEX, "data"),
    prevent_initial_call=True,
)
def refresh(rev: str | None, study_id: str, token: str | None, index: dict[str, Any] | None) -> tuple[Any, Any]:
    """Return the figure index and the results of revision `rev` (no_update when the layout prefetched them)."""
    if rev and index and index.get("_rev") == rev:  # the layout prefetched this revision already
        return no_update, no_update
    try:
        client = api(token)
        return {**client.figures_index(study_id), "_rev": rev}, client.results(study_id)
    except ApiError as err:
        return {"error": err.message}, {"error": err.message}


@callbacks.callback(
    Output(Study.SURFACE_STAGE, "options"),
    Output(Study.SURFACE_STAGE, "value"),
    Output(Study.HESSIAN_STAGE, "options"),
    Output(Study.HESSIAN_STAGE, "value"),
    Output(Study.PUB_FIGURE, "options"),
    Input(Study.INDEX, "data"),
    State(Study.SURFACE_STAGE, "value"),
    State(Study.HESSIAN_STAGE, "value"),
    prevent_initial_call=True,
)
def choices(index: dict[str, Any] | None, sstage: str | None, hstage: str | None) -> tuple[Any, ...]:
    """Return the surface and Hessian stage choices with the chosen stages kept where they still exist, and the publishable figures."""
    surf, hess = stage_keys(index, "surface"), stage_keys(index, "hessian")
    new_s = sstage if sstage in surf else (surf[0] if surf else None)
    new_h = hstage if hstage in hess else (hess[0] if hess else None)
    # Not called on page load (the layout fills the choices from its prefetched index, and an initial call would hold
    # the surface and Hessian callbacks for a round trip); called whenever the index changes. Always send the values:
    # a no_update would leave the callbacks that wait on them never called.
    return stage_options(index, "surface"), new_s, stage_options(index, "hessian"), new_h, publishable(index)
