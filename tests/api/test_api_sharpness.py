"""The sharpness figure of a real (tiny) run: what the API serves equals the stage's stage.json and npz, labelled with what
the diagonal is and with every statistic's n, null interval and p-values."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis

from app.api.figures import SHARPNESS_DEFINITIONS, decode
from tests.helpers.api import REDIS_URL, PostgresDatabases, TestApp, fresh_database, read_json

# The teacher task with a 20-16-4 MLP: IMP, random and distilled IMP, two rounds, the sharpness stage on every round.
CONFIG: dict[str, Any] = {
    "name": "sharpness-tiny",
    "data": {"name": "teacher"},
    "model": {"arch": "mlp", "hidden": [16]},
    "train": {"lr": 0.1, "batch_size": 50, "epochs": 1},
    "pruning": {"mask_sources": ["dense", "imp", "random", "distilled.dm"], "rounds": 2, "rewind_steps": [0]},
    "stability": {"pairs": [[1, 2]], "alphas": 3, "splits": ["test"]},
    "synthetic": {
        "sets": {"dm": {"method": "dm", "ipc": 2, "iterations": 2, "batch_real": 16}},
        "train": {"lr": 0.05, "batch_size": 4, "epochs": 2, "schedule": "constant"},
        "evaluate_runs": 0,
    },
    "analysis": {"sharpness": {"examples": 64, "random_draws": 100, "bins": 12}},
}
KEY = "sharpness/k0/r2"


def _run(artifact_root: Path) -> Path:
    """Run the study with lmc_core under <artifact_root>/runs and write what the worker adds (stages.json, summary.json)."""
    import torch

    from lmc_core.foundations.storage import save_json
    from lmc_core.studies.run import Run
    from lmc_core.studies.validation import validate_config

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run = Run(validate_config(CONFIG), artifact_root / "runs")
        run.run()
    finally:
        torch.set_num_threads(threads)
    save_json(run.dir / "stages.json", [{"key": s.key, "kind": s.kind, "deps": list(s.deps)} for s in run.stages])
    save_json(
        run.dir / "summary.json",
        {
            "table": run.table(),
            "analysis": run.analysis_table(),
            "synthetic": run.synthetic_table(),
            "stages": {s.key: s.kind for s in run.stages},
        },
    )
    return run.dir


@pytest.fixture(scope="module")
def sharp(backend: str, postgres: PostgresDatabases, artifact_root: Path, tmp_path_factory) -> Iterator[tuple[TestApp, str, Path]]:
    """An app on its own database holding the finished tiny study, mirrored by one sync tick: (app, study id, run dir)."""
    conn = redis.Redis.from_url(REDIS_URL, socket_timeout=5)
    try:
        conn.ping()
    except redis.exceptions.RedisError as err:
        pytest.skip(f"Redis does not answer at {REDIS_URL} ({err}); start redis-server on 127.0.0.1:6379")
    run_dir = _run(artifact_root)
    folder = tmp_path_factory.mktemp("sharpness")
    t = TestApp(database_url=fresh_database(backend, postgres, folder), artifact_root=artifact_root, data_dir=folder)
    study = t.create({"config": CONFIG})
    t.sync()
    yield t, study["id"], run_dir
    t.close()
    conn.flushdb()


def test_the_index_offers_each_rounds_sharpness_stage_with_its_reading(sharp):
    api, sid, _ = sharp
    index = api.get(f"/api/studies/{sid}/figures").json()
    assert index["figures"]["sharpness"] == ["sharpness/k0/r1", KEY]
    assert [(r["kind"], r["k"], r["round"]) for r in index["stage_refs"]["sharpness"]] == [("sharpness", 0, 1), ("sharpness", 0, 2)]


def test_the_figure_equals_the_stage_and_labels_every_number(sharp):
    api, sid, run_dir = sharp
    info = read_json(run_dir / "stages" / KEY / "stage.json")
    with np.load(run_dir / "stages" / KEY / "sharpness.npz", allow_pickle=False) as f:
        stored = {k: f[k] for k in f.files}
    for encoding in ("typed", "list"):
        fig = api.get(f"/api/studies/{sid}/figures/sharpness?stage={KEY}&encoding={encoding}").json()
        assert fig["figure"] == "sharpness" and fig["stage"] == KEY and fig["stage_ref"]["round"] == 2
        assert fig["reference_network"] == "copies/imp-k0-r1/k0/p0" and fig["diagonal"] == info["diagonal"]
        assert fig["diagonal"]["estimate"] is False and fig["diagonal"]["examples"] == 64
        assert fig["definitions"] == SHARPNESS_DEFINITIONS
        np.testing.assert_array_equal(decode(fig["edges"]), stored["edges"].astype(np.float32))
        assert [s["source"] for s in fig["sources"]] == ["imp", "random", "distilled.dm"]
        for entry in fig["sources"]:
            source, numbers = entry["source"], info["removal"][entry["source"]]
            assert entry["mask_ref"] == {"mask": f"{source}-k0-r2", "source": source, "k": 0, "round": 2}
            assert entry["removed"] == numbers["removed"] == len(stored[f"removed_index__{source}"])
            assert entry["random_draws"] == 100 and entry["statistics"] == numbers["statistics"]
            counts = decode(entry["counts"])
            assert counts.sum() + entry["nonpositive"] == entry["removed"]  # every removed weight is counted once
            np.testing.assert_array_equal(counts, stored[f"counts__{source}"])
            np.testing.assert_array_equal(decode(entry["band_high"]), stored[f"band_high__{source}"].astype(np.float32))
            for stat in entry["statistics"].values():
                lo, hi = stat["null_interval"]
                assert lo <= stat["null_mean"] <= hi and 1 / 101 <= stat["p_greater"] <= 1 and 1 / 101 <= stat["p_less"] <= 1


def test_the_arrays_download_and_a_missing_stage_names_the_choices(sharp):
    api, sid, run_dir = sharp
    r = api.get(f"/api/studies/{sid}/arrays/sharpness?stage={KEY}")
    assert r.status_code == 200 and r.content == (run_dir / "stages" / KEY / "sharpness.npz").read_bytes()
    r = api.get(f"/api/studies/{sid}/figures/sharpness?stage=sharpness/k0/r9")
    assert r.status_code == 404 and KEY in r.json()["detail"]
