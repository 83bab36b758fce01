"""The LMC Lab dashboard: a multi-page Dash app that reads and writes everything through the service's HTTP API."""

from __future__ import annotations

from pathlib import Path

STATIC = Path(__file__).resolve().parent / "static"  # package data: ships in the wheel (pyproject: tool.setuptools.package-data)


def create_dash(api_url: str):
    """Return the Dash app for the API at `api_url` (CSS from static/, scripts served locally: it works offline)."""
    from .app import build  # keeps `import app.dashboard` cheap for the CLI's --help

    return build(api_url)
