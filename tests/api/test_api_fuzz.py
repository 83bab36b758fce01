"""Property-based fuzzing of the whole OpenAPI schema (schemathesis): with an editor token, no request gets a 5xx,
and every response has a documented status, content type and body shape."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance, status_code_conformance

from app.api.auth import create_token
from app.api.db import make_engine, make_sessions, migrate
from app.api.main import create_app
from app.api.settings import Settings
from tests.helpers.api import REDIS_URL, fresh_database

# Not negative_data_rejection: it counts `?tag=false` (a boolean, in a query string) as invalid data accepted.
CHECKS = [schemathesis.checks.not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def fuzz_target(tmp_path_factory, artifact_root, postgres):
    """An app on its own store and an editor token: PostgreSQL when it answers (it refuses more than SQLite: NUL bytes,
    over-long strings, NaN in JSON), else SQLite."""
    import redis

    redis.Redis.from_url(REDIS_URL).flushdb()
    folder = tmp_path_factory.mktemp("fuzz")
    url = fresh_database("postgresql" if postgres.error is None else "sqlite", postgres, folder)
    settings_ = Settings(
        data_dir=folder, database_url=url, redis_url=REDIS_URL, artifact_root=artifact_root, sync_interval_s=0, max_jobs_per_user=0
    )
    engine = make_engine(settings_.database_url)
    migrate(engine)
    with make_sessions(engine)() as session:
        token = create_token(session, "fuzzer", "editor")[0]
    engine.dispose()
    app = create_app(settings_)
    yield app, token
    redis.Redis.from_url(REDIS_URL).flushdb()


# Loaded at collection from an app that is never started (create_app touches no file, database or Redis); the test
# points it at the started app. (schemathesis' from_fixture needs a pytest private that pytest 9.2 no longer has.)
schema = schemathesis.openapi.from_dict(create_app(Settings(database_url="sqlite://", sync_interval_s=0)).openapi())
schema.config.update(base_url="http://testserver")
schema.config.phases.coverage.enabled = False  # its boundary cases triple the run time; the fuzzing phase is what the budget allows


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_request_breaks_the_api(case, fuzz_target):
    app, token = fuzz_target
    case.call_and_validate(headers={"Authorization": f"Bearer {token}"}, checks=CHECKS, app=app)
