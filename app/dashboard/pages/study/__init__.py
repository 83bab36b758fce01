"""Study page: live progress while it runs, then its results as stages finish (sparsity, paths, landscape, Hessian, synthetic sets).

One module per part: header.py (title, progress, cancel/retry, the poll), index.py (the figure index and results the
tabs draw from, the stage choices), one module per tab, publish.py (the gallery card). This module lays them out.
"""

from __future__ import annotations

from typing import Any

import dash
from dash import dcc, html

from ... import urlstate
from ...callbacks import Callbacks
from ...client import api
from ...ids import Study
from . import header, hessian, index, landscape, paths, publish, sharpness, sparsity, synthetic

PATH = "/study/<study_id>"
TABS = ("sparsity", "paths", "landscape", "hessian", "sharpness", "synthetic")
PARTS = (header, index, sparsity, paths, landscape, hessian, sharpness, synthetic, publish)
callbacks = Callbacks()

urlstate.sync(
    callbacks,
    Study.URL,
    {
        "sources": (Study.SOURCES, "value"),
        "rounds": (Study.ROUNDS, "value"),
        "quantity": (Study.QUANTITY, "value"),
        "splits": (Study.SPLITS, "value"),
        "surface": (Study.SURFACE_STAGE, "value"),
        "sq": (Study.SURFACE_QUANTITY, "value"),
        "log": (Study.LOG, "value"),
        "hessian": (Study.HESSIAN_STAGE, "value"),
        "sharpness": (Study.SHARPNESS_STAGE, "value"),
        "barrier": (Study.BARRIER, "value"),
        "tab": (Study.TABS, "value"),
    },
)


def prefetch(study_id: str) -> dict[str, Any]:
    """Return what the first callbacks would fetch (study, progress, revision, figure index, results), read while the
    layout is built.

    Without it a page waits for a chain of callback round trips (poll -> revision -> index -> stage choice) before
    the first figure request; with it every figure is requested at once. Returns {} when anonymous reads are off or
    the API fails: the first poll then comes at once and the callbacks fetch as usual.
    """
    if not study_id:
        return {}
    try:
        client = api(None)  # the API bound to the app serving this request, anonymously
        study, p = client.study(study_id), client.progress(study_id)
        rev = header.revision(study, p)
        return {
            "study": study,
            "progress": p,
            "rev": rev,
            "index": {**client.figures_index(study_id), "_rev": rev},
            "results": client.results(study_id),
        }
    except Exception:  # noqa: BLE001  (any failure: fall back to the callback chain)
        return {}


def layout(study_id: str = "", **q: str) -> html.Div:
    """Return the study page for `study_id`; query parameters restore the view (sources, rounds, stages, toggles)."""
    pre = prefetch(study_id)
    study = pre.get("study")
    idx = pre.get("index") or {}
    tab = urlstate.first(q, "tab", "sparsity")
    tab = tab if tab in TABS else "sparsity"
    return html.Div(
        className="study",
        children=[
            dcc.Store(id=Study.ID, data=study_id),
            dcc.Store(id=Study.REV, data=pre.get("rev")),
            dcc.Store(id=Study.INDEX, data=pre.get("index")),
            dcc.Store(id=Study.RESULTS, data=pre.get("results")),
            dcc.Store(id=Study.URL),
            header.poller(study),
            *header.head(study_id, study, pre.get("progress")),
            # Tabs mount only the chosen tab's graphs: each view draws two to three figures instead of ten, and the
            # others' data still arrives with the page, so switching tabs draws without a round trip.
            dcc.Tabs(
                id=Study.TABS,
                value=tab,
                className="tabs",
                children=[
                    dcc.Tab(label="Sparsity", value="sparsity", id=Study.tab("sparsity"), children=sparsity.tab(q)),
                    dcc.Tab(label="Interpolation", value="paths", id=Study.tab("paths"), children=paths.tab(q)),
                    dcc.Tab(label="Landscape", value="landscape", id=Study.tab("landscape"), children=landscape.tab(q, idx)),
                    dcc.Tab(label="Hessian", value="hessian", id=Study.tab("hessian"), children=hessian.tab(q, idx)),
                    dcc.Tab(label="Sharpness", value="sharpness", id=Study.tab("sharpness"), children=sharpness.tab(q, idx)),
                    dcc.Tab(label="Synthetic sets", value="synthetic", id=Study.tab("synthetic"), children=synthetic.tab()),
                ],
            ),
            publish.card(idx),
        ],
    )


def register(app: dash.Dash) -> None:
    """Register the page and install the callbacks of all its parts on `app`."""
    dash.register_page(__name__, path_template=PATH, layout=layout, title="Study · LMC Lab", name="Study")
    callbacks.install(app)
    for part in PARTS:
        part.callbacks.install(app)
