"""Markers every suite shares, applied here from what a test uses, so `make test-fast` can leave out the heavy ones.

- `postgres`: a parametrisation whose value is "postgresql" (the `backend` fixture of tests/api, `kind` in the migration tests).
- `browser`: a test that takes the `browser` fixture (tests/dashboard/conftest.py: Playwright on the system Chromium).
- `slow` stays written on the tests themselves.

`make test-fast` runs `-m "not slow and not postgres and not browser"`; the markers are registered in pyproject.toml.
"""

from __future__ import annotations

import pytest

POSTGRES_PARAM = "postgresql"
BROWSER_FIXTURE = "browser"


def _uses_postgres(item: pytest.Item) -> bool:
    callspec = getattr(item, "callspec", None)
    return callspec is not None and any(isinstance(v, str) and v == POSTGRES_PARAM for v in callspec.params.values())


@pytest.hookimpl(tryfirst=True)  # before pytest's own hook deselects by -m
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark PostgreSQL parametrisations `postgres` and tests that drive Chromium `browser`."""
    for item in items:
        if _uses_postgres(item):
            item.add_marker(pytest.mark.postgres)
        if BROWSER_FIXTURE in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.browser)
