"""Where the worker finds a run: the runs folder of an artifact root, laid out as lmc_core.foundations.layout describes."""

from __future__ import annotations

from pathlib import Path

from lmc_core.foundations import layout


def runs_dir(artifact_root: str | Path) -> Path:
    """Return the folder holding every run directory under the artifact root."""
    return Path(artifact_root) / layout.RUNS_DIR


def run_dir(artifact_root: str | Path, run_id: str) -> Path:
    """Return the lmc_core run directory of `run_id` under the artifact root."""
    return layout.run_dir(runs_dir(artifact_root), run_id)
