"""The wheel is the product: built from the project's files alone and installed into a fresh venv, the dashboard it serves is styled.

The package sources are copied out of the checkout first (as the Dockerfile copies them), so nothing outside what the wheel
declares can leak in. The fresh venv gets the wheel only; the installed dependencies (torch, dash...) are borrowed from this
environment through a .pth file, so the test needs no network and never reinstalls torch.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
import zipfile
from pathlib import Path
from typing import IO

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
CSS = ROOT / "app" / "dashboard" / "static" / "lmc.css"
START_TIMEOUT_S = 120
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def _run(*cmd: str | Path, cwd: Path, env: dict[str, str] | None = None, timeout: float = 300) -> str:
    out = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"{' '.join(map(str, cmd))} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}"
    return out.stdout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _clean_env() -> dict[str, str]:
    """This environment minus anything that would point Python back at the checkout."""
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV"}}
    env.update(PYTHONNOUSERSITE="1", PYTHONDONTWRITEBYTECODE="1", OMP_NUM_THREADS="1")
    return env


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """Build the wheel from a copy of the project's files (pyproject, README, the three packages), offline."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    skip = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for pkg in ("lmc_core", "worker", "app"):
        shutil.copytree(ROOT / pkg, src / pkg, ignore=skip)
    dist = tmp_path_factory.mktemp("dist")
    # --no-build-isolation: the build backend is this environment's setuptools (a dev dependency), so no download.
    _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-cache-dir", "-q", "-w", dist, src, cwd=src)
    (whl,) = dist.glob("lmc_lab-*.whl")
    return whl


def test_wheel_ships_the_stylesheet(wheel: Path):
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        assert "app/dashboard/static/lmc.css" in names, sorted(n for n in names if n.startswith("app/dashboard/"))
        assert z.read("app/dashboard/static/lmc.css") == CSS.read_bytes()
    assert not any(n.startswith(("tests/", "benchmarks/", "static/")) for n in names), "only the packages belong in the wheel"


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory) -> Path:
    """A fresh venv holding the installed wheel; its dependencies come from this environment's site-packages (appended to sys.path)."""
    where = tmp_path_factory.mktemp("venv")
    venv = where / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=where)
    py = venv / "bin" / "python"
    # This environment's pip installs into the new venv (pip --python); the venv sees nothing of this one yet,
    # so pip neither resolves nor uninstalls anything here.
    _run(sys.executable, "-m", "pip", "--python", py, "install", "--no-deps", "--no-index", "--no-cache-dir", "-q", wheel, cwd=where)
    site = Path(_run(py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=where, env=_clean_env()).strip())
    # Plain path lines: the editable install's finder (a .pth of this environment) is not run, so `app` cannot come from the checkout.
    ours = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    (site / "zz_lmc_test_dependencies.pth").write_text("".join(f"{p}\n" for p in ours))
    return venv


def test_installed_dashboard_serves_the_stylesheet(venv: Path, tmp_path: Path):
    py = venv / "bin" / "python"
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    env = _clean_env()
    where = _run(py, "-c", "import app, app.dashboard as d; print(app.__file__); print(d.STATIC)", cwd=cwd, env=env).split()
    assert all(Path(p).resolve().is_relative_to(venv.resolve()) for p in where), f"imported from outside the fresh venv: {where}"
    assert not Path(where[0]).resolve().is_relative_to(ROOT), where

    port = _free_port()
    cmd = [py, "-m", "app.dashboard", "--host", "127.0.0.1", "--port", port, "--api-url", "http://127.0.0.1:9", "--threads", 2]
    with open(tmp_path / "dashboard.log", "w+") as log:
        proc = subprocess.Popen([str(c) for c in cmd], cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            _check_stylesheet(f"http://127.0.0.1:{port}", proc, log)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _check_stylesheet(url: str, proc: subprocess.Popen, log: IO[str]) -> None:
    """Wait for the dashboard at `url`, then fetch the stylesheet its page links and compare it with the package's file."""
    deadline = time.monotonic() + START_TIMEOUT_S
    page = None
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            page = httpx.get(url + "/", timeout=10)
            break
        except httpx.TransportError:
            time.sleep(0.5)
    log.seek(0)
    assert page is not None, f"the dashboard did not answer within {START_TIMEOUT_S} s (exit {proc.poll()}):\n{log.read()}"
    assert page.status_code == 200, page.text[:2000]
    links = re.findall(r'<link[^>]+href="([^"]*lmc\.css[^"]*)"', page.text)
    assert links, f"the page links no lmc.css:\n{page.text[:2000]}"
    css = httpx.get(url + links[0] if links[0].startswith("/") else links[0], timeout=10)
    assert css.status_code == 200, (css.status_code, css.headers)
    assert css.headers["content-type"].startswith("text/css"), css.headers
    assert css.content == CSS.read_bytes(), "the served stylesheet differs from app/dashboard/static/lmc.css"
