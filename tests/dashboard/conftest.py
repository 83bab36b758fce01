"""Browser fixtures: Playwright driving the system Chromium headless (no browser download), screenshots saved on failure."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(os.environ.get("LMC_E2E_ARTIFACTS", Path(tempfile.gettempdir()) / "lmc-e2e-artifacts"))


@pytest.fixture(scope="session")
def browser() -> Iterator:
    """A headless system Chromium; skipped with the reason when /usr/bin/chromium is missing."""
    if not Path(CHROMIUM).exists() or shutil.which(CHROMIUM) is None:
        pytest.skip(f"{CHROMIUM} is missing: apt-get install -y chromium (the E2E tests use the system Chromium, never a download)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    """Save a full-page screenshot of every open page when a browser test fails.

    The screenshots go under $LMC_E2E_ARTIFACTS, default <tmp>/lmc-e2e-artifacts.
    """
    outcome = yield
    rep = outcome.get_result()
    if rep.when != "call" or not rep.failed:
        return
    pages = getattr(item, "open_pages", [])
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for i, page in enumerate(pages):
        try:
            path = ARTIFACTS / f"{item.name}-{i}.png"
            page.screenshot(path=str(path), full_page=True)
            rep.sections.append(("screenshot", str(path)))
        except Exception as err:  # noqa: BLE001  (a crashed page cannot be photographed; the failure itself is what matters)
            rep.sections.append(("screenshot", f"not saved: {err}"))
