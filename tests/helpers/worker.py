"""Helpers of the worker tests: tiny study configs, result comparison, in-process and subprocess workers."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis

REDIS = "redis://127.0.0.1:6379"
ROOT = Path(__file__).resolve().parents[2]


def tiny_config(epochs: int = 2) -> dict[str, Any]:
    """Return a 14-stage study (dense, IMP and random masks, one round, a surface and a Hessian each, mask distances): seconds."""
    return {
        "name": "worker-test",
        "data": {"name": "mnist1d", "augmentation": "shift", "max_shift": 3},
        "model": {"arch": "mlp", "hidden": [32, 32]},
        "train": {"lr": 0.1, "batch_size": 32, "epochs": epochs, "schedule": "cosine"},
        "pruning": {"mask_sources": ["dense", "imp", "random"], "rounds": 1, "rewind_steps": [0]},
        "stability": {"pairs": [[100, 101]], "alphas": 5},
        "analysis": {
            "rounds": [1],
            "surface": {"plane": "copies", "resolution": 5, "examples": 200},
            "hessian": {"examples": 64, "top_k": 2, "trace_max_hvps": 20, "density_runs": 1, "density_steps": 10, "diagonal_samples": 5},
        },
    }


def redis_conn(db: int) -> redis.Redis:
    from worker import connect

    conn = connect(f"{REDIS}/{db}")
    try:
        conn.ping()
    except redis.ConnectionError:
        pytest.skip("no Redis at 127.0.0.1:6379")
    return conn


def _without_timings(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _without_timings(v) for k, v in obj.items() if k not in ("seconds", "distill_seconds")}
    if isinstance(obj, list):
        return [_without_timings(v) for v in obj]
    return obj


def assert_same_results(got: Path, want: Path) -> None:
    """Assert two run directories hold the same stages with bit-identical tensors and arrays and equal stage.json (timings aside)."""
    from safetensors.numpy import load_file

    stages_got = sorted(p.parent.relative_to(got) for p in got.glob("stages/**/stage.json"))
    stages_want = sorted(p.parent.relative_to(want) for p in want.glob("stages/**/stage.json"))
    assert stages_got == stages_want and stages_want
    for stage in stages_want:
        a = json.loads((got / stage / "stage.json").read_text())
        b = json.loads((want / stage / "stage.json").read_text())
        assert _without_timings(a) == _without_timings(b), stage
        names = sorted(p.name for p in (want / stage).iterdir())
        assert sorted(p.name for p in (got / stage).iterdir()) == names, stage
        for name in names:
            if name.endswith(".safetensors"):
                ta, tb = load_file(str(got / stage / name)), load_file(str(want / stage / name))
                assert ta.keys() == tb.keys()
                for k in tb:
                    assert np.array_equal(ta[k], tb[k]), f"{stage}/{name}:{k}"
            elif name.endswith(".npz"):
                with np.load(got / stage / name) as fa, np.load(want / stage / name) as fb:
                    assert sorted(fa.files) == sorted(fb.files)
                    for k in fb.files:
                        assert np.array_equal(fa[k], fb[k], equal_nan=fb[k].dtype.kind == "f"), f"{stage}/{name}:{k}"


def stage_mtimes(run_dir: Path) -> dict[str, tuple[float, float]]:
    """Return {stage key: (stage.json mtime, recorded seconds)} for every finished stage."""
    out: dict[str, tuple[float, float]] = {}
    for p in run_dir.glob("stages/**/stage.json"):
        out[str(p.parent.relative_to(run_dir / "stages"))] = (p.stat().st_mtime_ns, json.loads(p.read_text())["seconds"])
    return out


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, every: float = 0.05) -> Any:
    """Poll `predicate` until it returns something truthy and return that; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(every)


def burst(conn: redis.Redis, max_jobs: int | None = None) -> None:
    """Run the queue's jobs in this process with a forking LmcWorker until it is empty (or `max_jobs` jobs ran)."""
    import torch

    import worker.jobs  # noqa: F401  (loaded once here, so forked jobs do not import it)
    from worker.runner import make_worker

    w = make_worker(conn, ["lmc"], name=f"test-{uuid.uuid4().hex[:8]}")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the reference runs and the subprocess workers (OMP_NUM_THREADS=1): results are compared bitwise
    try:
        w.work(burst=True, logging_level="WARNING", max_jobs=max_jobs)
    finally:
        torch.set_num_threads(threads)


def pid_alive(pid: int) -> bool:
    from worker.liveness import pid_alive as alive

    return alive(pid)


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


class Workers:
    """Starts `lmc worker` subprocesses and makes sure none of them (nor their work horses) outlive the test."""

    def __init__(self, url: str, tmp: Path):
        self.url, self.tmp = url, tmp
        self.procs: list[subprocess.Popen] = []
        self.extra_pids: set[int] = set()
        self.env = {
            **os.environ,
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
            "LMC_REDIS_URL": url,
            "LMC_WORKER_TTL": "20",
            "LMC_JOB_MONITORING_INTERVAL": "1",
            "LMC_MAINTENANCE_INTERVAL": "2",
            "LMC_WORKER_DEAD_AFTER": "60",
            "PYTHONPATH": str(ROOT),
        }
        self.env.pop("LMC_ARTIFACT_ROOT", None)

    def start(self, name: str, *args: str) -> subprocess.Popen:
        with open(self.tmp / f"{name}.log", "w") as log:  # the worker writes to its own copy of the descriptor
            proc = subprocess.Popen(
                [sys.executable, "-m", "app.cli", "worker", "--url", self.url, "--name", name, "--log-level", "INFO", *args],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.procs.append(proc)
        return proc

    def log(self, name: str) -> str:
        return (self.tmp / f"{name}.log").read_text()

    def cleanup(self) -> None:
        for proc in self.procs:
            pids = _descendants(proc.pid) if proc.poll() is None else []
            for pid in [proc.pid, *pids]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            proc.wait(timeout=30)
        for pid in self.extra_pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
