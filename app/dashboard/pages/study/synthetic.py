"""The study page's Synthetic sets tab: each set's scores and a few of its images per class."""

from __future__ import annotations

from typing import Any

from dash import Input, Output, State, html

from ... import synthetic, ui
from ...callbacks import Callbacks
from ...client import api
from ...ids import Shell, Study

callbacks = Callbacks()


def tab() -> html.Section:
    """Return the tab's card (filled from the results when a set has finished)."""
    return ui.card("Synthetic sets", ui.loading(html.Div(id=Study.SYNTHETIC, children=ui.empty("no synthetic set yet"))))


@callbacks.callback(Output(Study.SYNTHETIC, "children"), Input(Study.RESULTS, "data"), State(Study.ID, "data"), State(Shell.TOKEN, "data"))
def synthetic_sets(results: dict[str, Any] | None, study_id: str, token: str | None) -> Any:
    """Return the sets' score table and picture grids, or why there is none."""
    sets = (results or {}).get("synthetic") or []
    if not sets:
        return ui.empty("this study has no synthetic set (or none has finished yet)")
    return synthetic.view(api(token), study_id, sets)
