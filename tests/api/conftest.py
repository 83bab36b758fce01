"""Fixtures of the API tests: real Redis (db 11, flushed around each test), SQLite and PostgreSQL stores, a tiny real run.

Store tests take the `backend` fixture, parametrized over sqlite and postgresql; PostgreSQL tests are skipped with
the reason when 127.0.0.1:5432 does not answer. Each session gets its own PostgreSQL database, dropped at the end.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

warnings.filterwarnings("ignore", message=".*httpx2.*")  # starlette 1.x asks for httpx2; httpx works the same for tests

from tests.helpers.api import REDIS_URL, PostgresDatabases, TestApp, fresh_database, tiny_config, tiny_run  # noqa: E402


def _redis_or_skip() -> redis.Redis:
    conn = redis.Redis.from_url(REDIS_URL, socket_timeout=5)
    try:
        conn.ping()
    except redis.exceptions.RedisError as err:
        pytest.skip(f"Redis does not answer at {REDIS_URL} ({err}); start redis-server on 127.0.0.1:6379")
    return conn


@pytest.fixture
def rconn() -> Iterator[redis.Redis]:
    """A client on the API tests' own Redis db (11), flushed before and after the test; never db 0."""
    conn = _redis_or_skip()
    conn.flushdb()
    yield conn
    conn.flushdb()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresDatabases]:
    """A maker of fresh PostgreSQL databases for this session (`.error` says why not when PostgreSQL does not answer)."""
    dbs = PostgresDatabases()
    yield dbs
    dbs.drop_all()


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def backend(request) -> str:
    """The store under test: sqlite or postgresql."""
    return request.param


@pytest.fixture(scope="session")
def database_url(backend: str, postgres: PostgresDatabases, tmp_path_factory) -> str:
    """One migrated-on-first-use database per backend for the session; tests empty it after themselves."""
    return fresh_database(backend, postgres, tmp_path_factory.mktemp(backend))


@pytest.fixture(scope="session")
def artifact_root(tmp_path_factory) -> Path:
    """The artifact root shared by every test app of the session (it holds the tiny run)."""
    return tmp_path_factory.mktemp("artifacts")


@pytest.fixture(scope="session")
def run_dir(artifact_root: Path) -> Path:
    """A tiny real study (the smoke preset shrunk) run once per session by lmc_core in this process, with summary and plan."""
    return tiny_run(artifact_root)


@pytest.fixture
def make_app(database_url: str, artifact_root: Path, tmp_path: Path, rconn: redis.Redis) -> Iterator:
    """Return a factory of started test apps on the session's database; the database is emptied after the test."""
    apps: list[TestApp] = []

    def make(**overrides) -> TestApp:
        t = TestApp(database_url=database_url, artifact_root=artifact_root, data_dir=tmp_path / f"data{len(apps)}", **overrides)
        apps.append(t)
        return t

    yield make
    for t in reversed(apps):
        t.close()
    TestApp.empty_database(database_url)


@pytest.fixture
def api(make_app) -> TestApp:
    """A started app (anonymous reads on, no background sync: tests call `api.sync()`), with admin/editor/viewer tokens."""
    return make_app()


@pytest.fixture(scope="module")
def finished_api(
    backend: str, postgres: PostgresDatabases, artifact_root: Path, run_dir: Path, tmp_path_factory
) -> Iterator[tuple[TestApp, dict]]:
    """For read-only tests: an app on its own database holding one study of the tiny run, mirrored by one sync tick."""
    conn = _redis_or_skip()
    folder = tmp_path_factory.mktemp("finished")
    t = TestApp(database_url=fresh_database(backend, postgres, folder), artifact_root=artifact_root, data_dir=folder)
    study = t.create({"config": tiny_config(), "tags": ["tiny"]})
    t.sync()
    yield t, t.get(f"/api/studies/{study['id']}").json()
    t.close()
    conn.flushdb()
