"""The README's examples run as written: the notebook example in Python, then the command-line examples in bash."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text()


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, re.S)


def test_readme_has_the_examples_a_newcomer_needs():
    assert len(blocks("python")) == 1 and len(blocks("bash")) == 1
    assert "make up" in README and "make test" in README


@pytest.mark.slow
def test_notebook_then_command_line_examples_run_as_written(tmp_path):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    notebook = subprocess.run(
        [sys.executable, "-c", blocks("python")[0]], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert notebook.returncode == 0, notebook.stderr[-3000:]
    assert "barrier" in notebook.stdout and "error" in notebook.stdout  # the rows and the dense path's barriers
    runs = list((tmp_path / "runs").iterdir())
    assert len(runs) == 1, "the notebook example leaves one run directory"
    # The CLI example resumes the same study: every stage is already done, so it only prints the table.
    cli = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", blocks("bash")[0]], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert cli.returncode == 0, cli.stderr[-3000:]
    assert "0 of" in cli.stdout or runs[0].name in cli.stdout
    assert "smoke" in cli.stdout and "imp" in cli.stdout
