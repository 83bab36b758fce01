"""The study page's Interpolation tab: error or loss along the linear path between each pair of copies, chosen by mask
source, round and split."""

from __future__ import annotations

from typing import Any

from dash import Input, Output, State, dcc, html, no_update

from ... import figures, palette, ui, urlstate
from ...callbacks import Callbacks
from ...client import ApiError, api
from ...ids import Shell, Study
from .index import available

callbacks = Callbacks()


def tab(q: dict[str, Any]) -> html.Section:
    """Return the tab's card; ?sources=, ?rounds=, ?quantity=, ?splits= restore the selection."""
    rounds = urlstate.many(q, "rounds")
    return ui.card(
        "Interpolation curves",
        html.Div(
            className="controls",
            children=[
                html.Label(["mask sources", dcc.Checklist(id=Study.SOURCES, value=urlstate.many(q, "sources") or [], inline=True)]),
                html.Label(["rounds", dcc.Checklist(id=Study.ROUNDS, value=[int(r) for r in rounds] if rounds else [], inline=True)]),
                html.Label(
                    [
                        "quantity",
                        dcc.RadioItems(
                            id=Study.QUANTITY, options=["error", "loss"], value=urlstate.first(q, "quantity", "error"), inline=True
                        ),
                    ]
                ),
                html.Label(
                    [
                        "splits",
                        dcc.Checklist(
                            id=Study.SPLITS, options=["test", "train"], value=urlstate.many(q, "splits") or ["test", "train"], inline=True
                        ),
                    ]
                ),
            ],
        ),
        ui.loading(ui.graph(Study.INTERP_GRAPH)),
    )


def grow(chosen: list[Any] | None, old_options: list[dict[str, Any]] | None, now: list[Any]) -> list[Any]:
    """Return the new selection: one that was "everything offered" grows with the study; a narrower one (the user's,
    or the link's on first load) stays, as far as it still exists."""
    kept = [v for v in chosen or [] if v in now]
    if old_options and set(chosen or []) >= {o["value"] for o in old_options}:
        return now
    return kept or now


# One callback fills the choices and draws the curves: split in two, the figure waited for the choices' round trip.
# The checklists are both its inputs and outputs (a circular callback Dash allows within one callback).
@callbacks.callback(
    Output(Study.SOURCES, "options"),
    Output(Study.SOURCES, "value"),
    Output(Study.ROUNDS, "options"),
    Output(Study.ROUNDS, "value"),
    Output(Study.INTERP_GRAPH, "figure"),
    Input(Study.SOURCES, "value"),
    Input(Study.ROUNDS, "value"),
    Input(Study.QUANTITY, "value"),
    Input(Study.SPLITS, "value"),
    Input(Study.INDEX, "data"),
    State(Study.SOURCES, "options"),
    State(Study.ROUNDS, "options"),
    State(Study.ID, "data"),
    State(Shell.TOKEN, "data"),
)
def interp(
    sources: list[str] | None,
    rounds: list[int] | None,
    quantity: str,
    splits: list[str] | None,
    index: dict[str, Any] | None,
    old_sources: list[dict[str, Any]] | None,
    old_rounds: list[dict[str, Any]] | None,
    study_id: str,
    token: str | None,
) -> tuple[Any, ...]:
    """Return the source and round choices with the selection kept or grown, and the chosen curves."""
    if not available(index, "interpolation"):
        return [], no_update, [], no_update, figures.empty("no path has finished yet")
    try:
        curves = api(token).figure(study_id, "interpolation")["curves"]
    except ApiError as err:
        return [], no_update, [], no_update, figures.empty(err.message)
    all_sources = sorted({c["source"] for c in curves}, key=lambda s: (s != "dense", s))
    all_rounds = sorted({c["round"] for c in curves})
    keep_s, keep_r = grow(sources, old_sources, all_sources), grow(rounds, old_rounds, all_rounds)
    chosen = figures.select_curves(curves, keep_s or None, keep_r or None)
    return (
        [{"label": html.Span(palette.label(s), style={"color": palette.colour(s)}), "value": s} for s in all_sources],
        keep_s,
        [{"label": f"r{r}", "value": r} for r in all_rounds],
        keep_r,
        figures.interpolation(chosen, quantity, splits or ["test"]),
    )
