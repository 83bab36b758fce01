"""Helpers of the API tests: a started app with tokens, emptying the store, and the tiny real run."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session, sessionmaker

from app.api.auth import create_token
from app.api.main import create_app
from app.api.models import Base
from app.api.settings import Settings

PG_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"  # trust auth; databases are made beside `test`
REDIS_URL = "redis://127.0.0.1:6379/11"  # the API tests' own db; the worker tests use others, nobody uses 0 here

# The smoke preset shrunk to seconds: every stage kind that has a figure (path, surface, hessian) and a distilled source.
TINY_OVERRIDES: dict[str, Any] = {
    "train": {"epochs": 1},
    "data": {"train_size": 500},
    "pruning": {"rewind_steps": [0], "rounds": 2, "mask_sources": ["dense", "imp", "random", "distilled.dm"]},
    "stability": {"alphas": 5},
    "sweep": {"steps": []},
    "synthetic": {
        "sets": {"dm": {"method": "dm", "ipc": 2, "iterations": 2, "lr_img": 10.0, "batch_real": 16}},
        "train": {"epochs": 2, "batch_size": 20, "milestones": []},
        "evaluate_runs": 0,
    },
    "analysis": {
        "rounds": [2],
        "mask_sources": ["imp"],
        "surface": {"resolution": 5, "examples": 100},
        "hessian": {"examples": 64, "top_k": 2, "trace_max_hvps": 8, "density_runs": 1, "density_steps": 5, "diagonal_samples": 3},
    },
}


def tiny_config() -> dict[str, Any]:
    """Return the tiny study's full config (validated, as JSON)."""
    from lmc_core.studies.presets import preset

    return preset("smoke", TINY_OVERRIDES).model_dump(mode="json")


def tiny_run(artifact_root: Path) -> Path:
    """Run the tiny study with lmc_core under <artifact_root>/runs and write what the worker adds (stages.json, summary.json)."""
    import torch

    from lmc_core.foundations.storage import save_json
    from lmc_core.studies.run import Run
    from lmc_core.studies.validation import load_config

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run = Run(load_config(tiny_config()), artifact_root / "runs")
        run.run()
    finally:
        torch.set_num_threads(threads)
    # The worker's plan job writes stages.json and refreshes summary.json after every stage (interface.md).
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


class PostgresDatabases:
    """Creates uniquely named PostgreSQL databases and drops them all at the end; `error` is set when PostgreSQL does not answer."""

    def __init__(self) -> None:
        self.admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        self.made: list[str] = []
        self.error: str | None = None
        try:
            with self.admin.connect() as c:
                c.execute(text("SELECT 1"))
        except Exception as err:  # noqa: BLE001  (any connection failure means the same thing: no PostgreSQL here)
            self.error = f"{err.__class__.__name__}: {str(err).splitlines()[0]}"

    def create(self) -> str:
        """Return the URL of a new empty database."""
        name = f"lmc_api_{uuid.uuid4().hex[:12]}"
        with self.admin.connect() as c:
            c.execute(text(f'CREATE DATABASE "{name}"'))
        self.made.append(name)
        return f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"

    def drop_all(self) -> None:
        """Drop every database this object created."""
        if self.error is None:
            with self.admin.connect() as c:
                for name in self.made:
                    c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        self.admin.dispose()


def fresh_database(backend: str, postgres: PostgresDatabases, folder: Path) -> str:
    """Return the URL of a new, empty database of `backend`; skips the test, saying why, when PostgreSQL is missing."""
    if backend == "sqlite":
        return f"sqlite:///{folder / f'lmc-{uuid.uuid4().hex[:8]}.db'}"
    if postgres.error is not None:
        pytest.skip(f"PostgreSQL does not answer at 127.0.0.1:5432 as user postgres, database test ({postgres.error})")
    return postgres.create()


class TestApp:
    """A started app (lifespan entered) with an admin, an editor and a viewer token."""

    __test__ = False  # not a test class, whatever its name

    def __init__(self, *, database_url: str, artifact_root: Path, data_dir: Path, **overrides: Any):
        fields = {
            "data_dir": data_dir,
            "database_url": database_url,
            "redis_url": REDIS_URL,
            "artifact_root": artifact_root,
            "sync_interval_s": 0,
            **overrides,
        }
        self.settings = Settings(**fields)
        self.app = create_app(self.settings)
        self.client = TestClient(self.app)
        self.client.__enter__()
        self.tokens: dict[str, str] = {}
        with self.sessions() as session:
            for role, user in (("admin", "ada"), ("editor", "eve"), ("viewer", "vic")):
                self.tokens[role] = create_token(session, user, role)[0]

    @property
    def sessions(self) -> sessionmaker[Session]:
        """Return the app's session factory."""
        return self.app.state.sessions

    def headers(self, role: str | None) -> dict[str, str]:
        """Return the Authorization header of `role`'s token ({} for None: anonymous)."""
        return {"Authorization": f"Bearer {self.tokens[role]}"} if role else {}

    def get(self, url: str, role: str | None = None, **kw: Any) -> httpx.Response:
        """Return the response to GET `url` as `role` (anonymous by default)."""
        return self.client.get(url, headers=self.headers(role), **kw)

    def post(self, url: str, json_body: Any = None, role: str | None = "editor", **kw: Any) -> httpx.Response:
        """Return the response to POST `url` with a JSON body as `role` (editor by default)."""
        return self.client.post(url, json=json_body, headers=self.headers(role), **kw)

    def patch(self, url: str, json_body: Any = None, role: str | None = "editor") -> httpx.Response:
        """Return the response to PATCH `url` as `role`."""
        return self.client.patch(url, json=json_body, headers=self.headers(role))

    def delete(self, url: str, role: str | None = "editor") -> httpx.Response:
        """Return the response to DELETE `url` as `role`."""
        return self.client.delete(url, headers=self.headers(role))

    def sync(self) -> dict[str, Any]:
        """Run one tick of the sync task (reconcile, submit, mirror) and return its report."""
        return self.app.state.syncer.tick()

    def create(self, body: dict[str, Any], role: str = "editor") -> dict[str, Any]:
        """Create a study through the API and return it (asserting 201)."""
        r = self.post("/api/studies", body, role)
        assert r.status_code == 201, r.text
        return r.json()

    def close(self) -> None:
        """Leave the app's lifespan (stops its sync task, closes Redis and the engine)."""
        self.client.__exit__(None, None, None)

    @staticmethod
    def empty_database(url: str) -> None:
        """Delete every row of every table (children first), keeping the schema."""
        engine = create_engine(url)
        with engine.begin() as conn:
            for table in reversed(Base.metadata.sorted_tables):
                conn.execute(table.delete())
        engine.dispose()


def worker_config(seed: int = 0) -> dict[str, Any]:
    """Return a 13-stage study (dense, IMP and random masks, one round, a surface and a Hessian each) a burst worker runs in seconds.

    `seed` changes the run id, so tests on the two backends (one artifact root) do not share finished stages.
    """
    return {
        "name": "api-worker-test",
        "seed": seed,
        "data": {"name": "mnist1d", "augmentation": "shift", "max_shift": 3},
        "model": {"arch": "mlp", "hidden": [32, 32]},
        "train": {"lr": 0.1, "batch_size": 32, "epochs": 2, "schedule": "cosine"},
        "pruning": {"mask_sources": ["dense", "imp", "random"], "rounds": 1, "rewind_steps": [0]},
        "stability": {"pairs": [[100, 101]], "alphas": 5},
        "analysis": {
            "rounds": [1],
            "surface": {"plane": "copies", "resolution": 5, "examples": 200},
            "hessian": {"examples": 64, "top_k": 2, "trace_max_hvps": 20, "density_runs": 1, "density_steps": 10, "diagonal_samples": 5},
        },
    }


def burst(queues: tuple[str, ...] = ("lmc",), max_jobs: int | None = None) -> None:
    """Run the jobs of `queues` on the API tests' Redis with a real forking LmcWorker in this process until they are empty."""
    import torch

    import worker.jobs  # noqa: F401  (loaded once here, so forked jobs do not import it)
    from worker import connect
    from worker.runner import make_worker

    w = make_worker(connect(REDIS_URL), list(queues), name=f"api-test-{uuid.uuid4().hex[:8]}")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        w.work(burst=True, logging_level="WARNING", max_jobs=max_jobs)
    finally:
        torch.set_num_threads(threads)


def stage_mtimes(run_dir: Path) -> dict[str, int]:
    """Return {stage key: mtime in ns} of every file of every finished stage (a recomputed stage rewrites its files)."""
    out = {}
    for info in run_dir.glob("stages/**/stage.json"):
        stage = info.parent
        for f in stage.iterdir():
            out[f"{stage.relative_to(run_dir / 'stages')}/{f.name}"] = f.stat().st_mtime_ns
    return out


def read_json(path: Path) -> Any:
    """Return a JSON file's content."""
    return json.loads(path.read_text())
