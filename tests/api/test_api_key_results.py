"""Key results on the study list: computed by the sync from the results table, stored on the study row, sorted and filtered in SQL."""

from __future__ import annotations

import math

from app.api import key_results
from app.api import studies as store
from app.api.models import Result, Study
from lmc_core.foundations.config import StudyConfig


def _row(source, rnd, k, sparsity, acc, barrier):
    return {"source": source, "round": rnd, "rewind_step": k, "sparsity": sparsity, "accuracy_mean": acc, "error_barrier": barrier}


CONFIG = {"pruning": {"mask_sources": ["dense", "imp", "random"], "rewind_steps": [125, 0]}}
TABLE = [
    _row("dense", 0, 125, 0.0, 97.6, 1.0),
    _row("imp", 1, 125, 20.0, 98.0, 1.4),
    _row("imp", 2, 125, 36.0, 97.3, 0.2),
    _row("random", 2, 125, 36.0, 97.4, 1.6),
    _row("dense", 0, 0, 0.0, 97.3, 22.2),
    _row("imp", 1, 0, 20.0, 97.7, 4.2),
    _row("imp", 2, 0, 36.0, 97.8, 3.4),
    {"source": "sweep", "round": None, "rewind_step": 25, "sparsity": 0.0, "accuracy_mean": 97.0, "error_barrier": 30.5},
]


def test_key_results_follow_the_main_source_and_the_first_rewind_step():
    # imp (first non-dense source), its last round (2), the first listed rewind step (125); barrier over imp's rows only
    # (every round and rewind step): not the dense network's 22.2 at k=0 nor the sweep's 30.5
    assert key_results.compute(TABLE, CONFIG) == {"final_accuracy": 97.3, "largest_barrier": 4.2, "sparsity_reached": 36.0}
    # a round still missing for imp at k=125 falls back to what finished: the last round imp reached anywhere
    partial = [r for r in TABLE if not (r["source"] == "imp" and r["round"] == 2 and r["rewind_step"] == 125)]
    assert key_results.compute(partial, CONFIG)["final_accuracy"] == 97.8
    assert key_results.compute(TABLE, {"pruning": {"mask_sources": ["random", "imp"], "rewind_steps": [0, 125]}})["final_accuracy"] == 97.4
    dense_only = {"pruning": {"mask_sources": ["dense"], "rewind_steps": [0]}}
    assert key_results.compute(TABLE, dense_only) == {"final_accuracy": 97.3, "largest_barrier": 22.2, "sparsity_reached": 0.0}
    assert key_results.compute([], CONFIG) == {"final_accuracy": None, "largest_barrier": None, "sparsity_reached": None}
    nan = [_row("imp", 1, 0, 20.0, math.nan, math.inf)]
    assert key_results.compute(nan, CONFIG) == {"final_accuracy": None, "largest_barrier": None, "sparsity_reached": 20.0}


def test_the_list_carries_the_key_results_of_a_mirrored_study(finished_api):
    api, study = finished_api
    table = api.get(f"/api/studies/{study['id']}/results").json()["table"]
    # Independently of app.api.key_results: the tiny study's main source is imp (after dense), one rewind step.
    imp = [r for r in table if r["source"] == "imp"]
    last = max(imp, key=lambda r: r["round"])
    row = next(s for s in api.get("/api/studies").json()["data"] if s["id"] == study["id"])
    assert row["final_accuracy"] == round(last["accuracy_mean"], 4) and row["sparsity_reached"] == round(last["sparsity"], 4)
    assert row["largest_barrier"] == round(max(r["error_barrier"] for r in imp), 4)
    assert last["round"] == 2 and 30 < row["sparsity_reached"] < 40  # 1 - 0.8^2 = 36 %
    assert api.get(f"/api/studies/{study['id']}").json()["final_accuracy"] == row["final_accuracy"]


def _studies_with_results(api, values: list[tuple[float | None, float | None, float | None]]) -> list[str]:
    ids = []
    with api.sessions() as s:
        for i, (acc, barrier, sparsity) in enumerate(values):
            row = store.create(s, StudyConfig(name=f"s{i}", seed=i), preset=None, owner_id=None, tags=[])
            row.final_accuracy, row.largest_barrier, row.sparsity_reached = acc, barrier, sparsity
            s.commit()
            ids.append(row.id)
    return ids


def test_key_results_sort_with_missing_ones_last_and_filter(api):
    ids = _studies_with_results(api, [(97.5, 3.0, 59.0), (None, None, None), (96.0, 0.2, 36.0), (98.1, 12.0, 20.0), (None, 1.0, None)])
    a, none, b, c, partial = ids

    def order(query: str) -> list[str]:
        return [s["id"] for s in api.get(f"/api/studies?{query}").json()["data"]]

    assert order("sort=final_accuracy") == [b, a, c, *sorted([none, partial])]
    assert order("sort=-final_accuracy") == [c, a, b, *sorted([none, partial], reverse=True)]
    assert order("sort=-largest_barrier") == [c, a, partial, b, none]
    assert order("sort=largest_barrier") == [b, partial, a, c, none]
    assert order("sort=-sparsity_reached")[:3] == [a, b, c]
    assert set(order("accuracy_min=97")) == {a, c}
    assert set(order("barrier_max=1.0")) == {b, partial}  # inclusive
    assert set(order("sparsity_min=30&accuracy_max=97.5")) == {a, b}
    assert api.get("/api/studies?accuracy_min=101").status_code == 422


def test_older_studies_get_their_key_results_and_queue_on_the_first_sync(api):
    sid = _studies_with_results(api, [(None, None, None)])[0]
    with api.sessions() as s:
        study = s.get(Study, sid)
        study.queue = None  # as the migration leaves rows made before queues were chosen
        study.config = {**study.config, "pruning": {**study.config["pruning"], "mask_sources": ["dense", "imp"], "rewind_steps": [0]}}
        s.add(Result(study_id=sid, run_id=study.run_id, table=TABLE[4:7], analysis=[], synthetic=[], stages={}))
        s.commit()
    assert api.app.state.syncer.upgrade_rows() == {"queue": 1, "key_results": 1}
    row = api.get(f"/api/studies/{sid}").json()
    assert (row["queue"], row["final_accuracy"], row["largest_barrier"], row["sparsity_reached"]) == ("lmc", 97.8, 4.2, 36.0)
    assert api.app.state.syncer.upgrade_rows() == {"queue": 0, "key_results": 0}
