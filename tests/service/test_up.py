"""End to end: `lmc up` on a fresh data directory, a study submitted over HTTP, watched, its results fetched, then stopped.

Nothing is mocked: a private redis-server, the uvicorn API on SQLite, a forking RQ worker running lmc_core.
"""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _descendants(pid: int) -> set[int]:
    """Return the pids whose parent chain leads to `pid` (read from /proc)."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                parents[int(entry.name)] = int(fields[1])
            except (OSError, IndexError, ValueError):
                continue
    out: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {p for p, pp in parents.items() if pp in frontier} - out
        out |= frontier
    return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"


@pytest.fixture
def system(tmp_path):
    """Yield (api url, admin token, process) of `lmc up` on a temporary data directory; stop it with SIGINT afterwards."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "LMC_WORKER_TTL": "20"}
    env.pop("LMC_REDIS_URL", None)
    env.pop("LMC_DATABASE_URL", None)
    env.pop("LMC_ARTIFACT_ROOT", None)
    data = tmp_path / "data"
    with open(tmp_path / "up.log", "w+") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "up", "--data-dir", str(data), "--port", "0", "--dashboard-port", "0"],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        url, deadline = None, time.monotonic() + 120
        while url is None and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.3)
            m = re.search(r"API (http://127\.0\.0\.1:\d+)/api", Path(log.name).read_text())
            url = m.group(1) if m else None
        assert url, f"lmc up did not come up:\n{Path(log.name).read_text()}"
        children = _descendants(proc.pid)
        try:
            yield url, (data / "admin-token").read_text().strip(), proc, children
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                proc.wait(timeout=60)


def test_lmc_up_runs_a_study_end_to_end_and_leaves_nothing_behind(system, tmp_path):
    url, token, proc, children = system
    assert len(children) >= 3  # redis, api, worker (and their own children)
    auth = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=url, timeout=30) as http:
        health = http.get("/api/health").json()
        assert health["database"]["ok"] and health["redis"]["ok"] and health["workers"] == 1

        assert http.post("/api/studies", json={"preset": "smoke"}).status_code == 401  # writes need a token
        created = http.post("/api/studies", json={"preset": "smoke"}, headers=auth)
        assert created.status_code == 201, created.text
        sid = created.json()["id"]

        seen_running, deadline = False, time.monotonic() + 600
        while time.monotonic() < deadline:
            progress = http.get(f"/api/studies/{sid}/progress").json()
            seen_running |= progress["status"] == "running" or bool(progress["running"])
            if progress["status"] in ("finished", "failed", "cancelled"):
                break
            time.sleep(1)
        assert progress["status"] == "finished", progress
        assert seen_running and progress["done"] == progress["total"] > 10

        results = http.get(f"/api/studies/{sid}/results").json()
        assert results["available"]
        rows = [r for r in results["table"] if r["source"] != "sweep"]  # sweep rows: the rewind-step sweep of chosen masks
        assert {r["source"] for r in rows} == {"dense", "imp", "random", "distilled.dm", "subset.dm"}
        for r in rows:  # global magnitude pruning at rate 0.2: round r keeps 0.8**r of the weights
            assert r["sparsity"] == pytest.approx(100 * (1 - 0.8 ** r["round"]), abs=0.05)
            assert 0 <= r["accuracy_mean"] <= 100 and r["error_barrier"] >= -100

        # The path's arrays come as npz; its endpoints are the two trained copies, evaluated exactly as their stage did.
        k = rows[0]["rewind_step"]
        arrays = http.get(f"/api/studies/{sid}/arrays/path", params={"stage": f"path/dense/k{k}/p0"})
        assert arrays.status_code == 200, arrays.text
        with np.load(io.BytesIO(arrays.content), allow_pickle=False) as z:
            alphas, loss = z["alphas"], z["loss_test"]
        copies = http.get(f"/api/studies/{sid}/stages/info", params={"stage": f"copies/dense/k{k}/p0"}).json()["copies"]
        assert alphas[0] == 0.0 and alphas[-1] == 1.0
        assert loss[0] == pytest.approx(copies[0]["metrics"]["test"]["loss"], rel=1e-6)
        assert loss[-1] == pytest.approx(copies[1]["metrics"]["test"]["loss"], rel=1e-6)
        for name in ("interpolation", "surface", "hessian"):
            assert http.get(f"/api/studies/{sid}/figures/{name}").status_code == 200, name

    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 0
    time.sleep(0.5)
    left = [p for p in children if _alive(p)]
    assert not left, f"processes left behind after lmc up stopped: {left}"
