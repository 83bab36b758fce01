"""Markers every suite shares, applied here from what a test uses, so `make test-fast` can leave out the heavy ones.

- `postgres`: a parametrisation whose value is "postgresql" (the `backend` fixture of tests/api, `kind` in the migration tests).
- `browser`: a test that takes the `browser` fixture (tests/dashboard/conftest.py: Playwright on the system Chromium).
- `slow` stays written on the tests themselves.

`make test-fast` runs `-m "not slow and not postgres and not browser"`; the markers are registered in pyproject.toml.
"""

from __future__ import annotations

import sys

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


def _torch_threads() -> int | None:
    """Return torch's intra-op thread count, or None while torch is not imported (the API and dashboard suites stay torch-free)."""
    torch = sys.modules.get("torch")
    return None if torch is None else torch.get_num_threads()


def _restore_torch_threads(before: int | None) -> None:
    torch = sys.modules.get("torch")
    if before is not None and torch is not None and torch.get_num_threads() != before:
        torch.set_num_threads(before)


# torch.set_num_threads is process-global and CPU results depend on it (GEMMs split their sums by thread,
# lmc_core.foundations.version records it): a test or fixture that sets it must not hand its count to the
# tests after it. Tests and module fixtures that need a count set it themselves; these put it back after
# each module (module fixtures included: this one is set up before them and torn down after them) and test.
@pytest.fixture(autouse=True, scope="module")
def _torch_threads_restored_per_module():
    before = _torch_threads()
    yield
    _restore_torch_threads(before)


@pytest.fixture(autouse=True)
def _torch_threads_restored_per_test():
    before = _torch_threads()
    yield
    _restore_torch_threads(before)
