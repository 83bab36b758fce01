"""The sharpness tab's figure and table, fed what the API makes of a stage built by lmc_core on a constructed case."""

from __future__ import annotations

import numpy as np
import pytest

from app.api.figures import sharpness as sharpness_figure
from app.dashboard import palette
from app.dashboard.pages.study.sharpness import histogram, numbers, table
from lmc_core.studies.stages.sharpness import log_edges, removal_statistics


def stage_payload(encoding: str = "typed") -> dict:
    """Return the API's figure JSON of a stage where 'imp' removes the 10 flattest and 'distilled.dm' the 10 sharpest of 100."""
    diag = np.logspace(-4, 1, 100)
    edges = log_edges(diag, 10)
    previous = np.ones(100, bool)
    arrays = {"diagonal": diag, "edges": edges}
    removal = {}
    for source, removed in (("imp", np.arange(10)), ("distilled.dm", np.arange(90, 100))):
        current = previous.copy()
        current[removed] = False
        nums, arr = removal_statistics(
            diag, [100], previous, current, threshold=float(np.quantile(diag, 0.9)), edges=edges, draws=99, seed=0, purpose=source
        )
        removal[source] = {"previous_mask": "dense", "mask": f"{source}-k0-r1", **nums, "outside_reference": 0}
        arrays.update({f"{k}__{source}": v for k, v in arr.items()})
    info = {
        "k": 0,
        "round": 1,
        "reference": "previous",
        "reference_mask": "dense",
        "reference_network": "copies/dense/k0/p0",
        "reference_copy": "a",
        "sources": ["imp", "distilled.dm"],
        "diagonal": {"method": "exact", "estimate": False, "examples": 64, "mode": "eval", "coordinates": 100},
        "top_decile_threshold": float(np.quantile(diag, 0.9)),
        "removal": removal,
    }
    return sharpness_figure("sharpness/k0/r1", arrays, info, encoding)  # type: ignore[arg-type]


@pytest.mark.parametrize("encoding", ["typed", "list"])
def test_each_source_is_drawn_as_its_share_of_removed_weights_with_its_random_band(encoding):
    fig = histogram(stage_payload(encoding))
    lines = [t for t in fig.data if t.mode == "lines+markers"]
    assert [t.name for t in lines] == [f"{palette.label('imp')} (n = 10)", f"{palette.label('distilled.dm')} (n = 10)"]
    imp, dm = (np.asarray(t.y, dtype=float) for t in lines)
    assert imp.sum() == pytest.approx(1.0) and dm.sum() == pytest.approx(1.0)  # every removed weight is in a bin
    assert imp[:2].sum() == pytest.approx(1.0) and dm[-2:].sum() == pytest.approx(1.0)  # flattest vs sharpest bins
    bands = [t for t in fig.data if t.fill == "tonexty"]
    assert len(bands) == 2 and lines[0].line.color == palette.colour("imp")


def test_the_table_gives_every_statistic_its_null_interval_p_values_and_n():
    data = stage_payload()
    rows = table(data).children[1].children
    assert len(rows) == 6  # 2 sources x 3 statistics
    dm_mean = [c.children for c in rows[3].children]
    stat = data["sources"][1]["statistics"]["mean"]
    assert dm_mean[:3] == [palette.label("distilled.dm"), "mean H_ii", f"{stat['observed']:.3g}"]
    assert dm_mean[4] == f"{1 / 100:.3g}" and dm_mean[6:] == ["10", "99"]  # the sharpest 10: the smallest p with 99 draws
    text = " ".join(s.children for s in numbers(data))
    assert "exact" in text and "copies/dense/k0/p0" in text and "64 training examples" in text
