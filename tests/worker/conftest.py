"""Fixtures of the worker tests: a real Redis on a dedicated db (never db 0), reference runs, worker subprocesses."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.helpers.worker import REDIS, Workers, redis_conn


@pytest.fixture
def conn(request) -> Iterator[redis.Redis]:
    """A client on the module's own Redis db (REDIS_DB), flushed before and after the test; never db 0."""
    db = getattr(request.module, "REDIS_DB", 9)
    assert db != 0
    c = redis_conn(db)
    c.flushdb()
    yield c
    c.flushdb()


_references: dict[str, Path] = {}


@pytest.fixture(scope="session")
def reference(tmp_path_factory) -> Callable[[dict[str, Any]], Path]:
    """Return a function giving the run directory of an uninterrupted direct Run of a config (computed once per session)."""

    def get(config: dict[str, Any]) -> Path:
        key = json.dumps(config, sort_keys=True)
        if key not in _references:
            import torch

            from lmc_core.studies.run import Run
            from lmc_core.studies.validation import load_config

            # Bitwise comparisons need the workers' thread count (OMP_NUM_THREADS=1 in their environment).
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                run = Run(load_config(config), tmp_path_factory.mktemp("reference") / "runs")
                run.run()
            finally:
                torch.set_num_threads(threads)
            _references[key] = run.dir
        return _references[key]

    return get


@pytest.fixture
def workers(request, tmp_path) -> Iterator[Workers]:
    """A factory of `lmc worker` subprocesses on the module's Redis db, all killed (with their children) at teardown."""
    db = getattr(request.module, "REDIS_DB", 10)
    w = Workers(f"{REDIS}/{db}", tmp_path)
    yield w
    w.cleanup()
