"""The service under load: submission-to-start latency, and the study list at 1,000 studies under 20 concurrent clients.

Run from the repository root: `.venv/bin/python benchmarks/bench_service.py [--quick] [--database-url URL]`.

Everything is real: a uvicorn API process (SQLite in a temporary data directory, or the PostgreSQL
that --database-url names), the Redis at 127.0.0.1:6379 (database 13, flushed before and after),
and one `lmc worker` process.

1. Latency: a study (`smoke` with a fresh seed, so every run id is new) is POSTed; we read from Redis
   when its plan job started and when its first stage job (init) started, then cancel it. The
   baseline, interleaved with it, is the floor of the queue itself: a bare RQ job enqueued straight
   into the same queue and picked up by the same worker. Ratio = ours / bare RQ.
2. List: 1,000 studies are written to the store, then 20 clients (threads, one HTTP connection each)
   page through GET /api/studies with sorting and filters. Latency percentiles and requests per second.

Prints tables; the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

REDIS_URL = "redis://127.0.0.1:6379/13"
CLIENTS = 20
STUDIES = 1000


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer")


def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


def _started(conn, job_id: str, timeout: float = 60) -> datetime:
    from rq.job import Job

    from worker import SERIALIZER

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            job = Job.fetch(job_id, connection=conn, serializer=SERIALIZER)
            if job.started_at is not None:
                return job.started_at.replace(tzinfo=timezone.utc) if job.started_at.tzinfo is None else job.started_at
        except Exception:  # noqa: BLE001  (not created yet: the plan job creates the stage jobs)
            pass
        time.sleep(0.005)
    raise RuntimeError(f"job {job_id} never started")


def _wait_idle(conn, timeout: float = 60) -> None:
    from rq import Worker

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(w.get_state() == "idle" for w in Worker.all(connection=conn)):
            return
        time.sleep(0.05)


def latency(api: str, token: str, conn, repeats: int) -> dict:
    """Return submission-to-start seconds (plan job, first stage) and the bare-RQ floor, interleaved."""
    from rq import Queue

    from worker import SERIALIZER, plan_job_id, stage_job_id

    queue = Queue("lmc", connection=conn, serializer=SERIALIZER)
    ours_plan, ours_stage, bare = [], [], []
    auth = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=api, timeout=30, headers=auth) as http:
        for i in range(repeats):
            t0 = datetime.now(timezone.utc)
            job = queue.enqueue("time.sleep", 0)
            bare.append((_started(conn, job.id) - t0).total_seconds())
            _wait_idle(conn)

            t0 = datetime.now(timezone.utc)
            r = http.post("/api/studies", json={"preset": "smoke", "overrides": {"seed": 10_000 + i + int(time.time()) % 10_000}})
            r.raise_for_status()
            study = r.json()
            ours_plan.append((_started(conn, plan_job_id(study["id"])) - t0).total_seconds())
            ours_stage.append((_started(conn, stage_job_id(study["run_id"], "init")) - t0).total_seconds())
            http.post(f"/api/studies/{study['id']}/cancel").raise_for_status()
            _wait_idle(conn)
    return {"plan": ours_plan, "first_stage": ours_stage, "bare_rq": bare}


def fill(database_url: str, n: int) -> None:
    """Write `n` studies (mixed presets, statuses, tags) straight into the store, as a busy team's history."""
    from app.api.db import make_engine, make_sessions
    from app.api.studies import create
    from lmc_core.studies.presets import preset

    statuses = ["finished"] * 6 + ["failed", "cancelled", "running", "queued"]
    rng = random.Random(0)
    sessions = make_sessions(make_engine(database_url))
    configs = {name: preset(name) for name in ("smoke", "mnist1d", "digits-stable")}
    with sessions() as session:
        for i in range(n):
            name = rng.choice(list(configs))
            cfg = configs[name].model_copy(update={"seed": i, "name": f"{name}-{i}"})
            study = create(session, cfg, preset=name, owner_id=None, tags=rng.sample(["imp", "distill", "paper", "ablation"], 2))
            study.status = rng.choice(statuses)
            session.commit()


def listing(api: str, clients: int, per_client: int) -> dict:
    """Return per-request latencies of 20 concurrent clients paging, sorting and filtering the study list."""
    queries: list[dict[str, str | int]] = [
        {"limit": 50, "sort": "-created_at"},
        {"limit": 50, "sort": "name"},
        {"limit": 50, "status": "finished", "sort": "-created_at"},
        {"limit": 25, "tag": "paper"},
        {"limit": 50, "q": "mnist1d"},
    ]
    lat: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(clients)

    def client(seed: int) -> None:
        rng = random.Random(seed)
        mine = []
        with httpx.Client(base_url=api, timeout=60) as http:
            barrier.wait()
            for _ in range(per_client):
                params = {**rng.choice(queries), "offset": rng.randrange(0, STUDIES - 50, 50)}
                t = time.perf_counter()
                r = http.get("/api/studies", params=params)
                mine.append(time.perf_counter() - t)
                if r.status_code != 200:
                    with lock:
                        errors.append(f"{r.status_code} {r.text[:200]}")
        with lock:
            lat.extend(mine)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return {"latencies": lat, "wall": wall, "errors": errors}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="5 latency repeats, 10 requests per client")
    ap.add_argument(
        "--database-url", default=None, help="e.g. postgresql+psycopg://postgres@127.0.0.1:5432/lmc_bench (default: SQLite in a temp dir)"
    )
    args = ap.parse_args()
    repeats, per_client = (5, 10) if args.quick else (15, 25)

    from worker import connect

    conn = connect(REDIS_URL)
    conn.flushdb()
    procs = []
    with tempfile.TemporaryDirectory() as d:
        env = {**os.environ, "LMC_DATA_DIR": d, "LMC_REDIS_URL": REDIS_URL, "OMP_NUM_THREADS": "1", "LMC_MAX_JOBS_PER_USER": "0"}
        if args.database_url:
            env["LMC_DATABASE_URL"] = args.database_url
        db_url = args.database_url or f"sqlite:///{d}/lmc.db"
        token = subprocess.run(
            [sys.executable, "-m", "app.cli", "token", "create", "--user", "bench", "--role", "editor"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
            cwd=ROOT,
        ).stdout.strip()
        port = _free_port()
        api = f"http://127.0.0.1:{port}"
        try:
            procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "uvicorn",
                        "--factory",
                        "app.api.main:create_app",
                        "--port",
                        str(port),
                        "--log-level",
                        "warning",
                    ],
                    env=env,
                    cwd=ROOT,
                )
            )
            procs.append(subprocess.Popen([sys.executable, "-m", "app.cli", "worker", "--log-level", "WARNING"], env=env, cwd=ROOT))
            _wait(api + "/api/health")
            deadline = time.monotonic() + 60
            while httpx.get(api + "/api/health").json().get("workers", 0) < 1 and time.monotonic() < deadline:
                time.sleep(0.2)

            lat = latency(api, token, conn, repeats)
            t = time.perf_counter()
            fill(db_url, STUDIES)
            fill_s = time.perf_counter() - t
            lst = listing(api, CLIENTS, per_client)
        finally:
            for p in procs:
                p.terminate()
            for p in procs:
                try:
                    p.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    p.kill()
            conn.flushdb()

    med = {k: statistics.median(v) for k, v in lat.items()}
    backend = "postgresql" if args.database_url and "postgres" in args.database_url else "sqlite"
    print(f"submission to start ({repeats} studies, median; bare RQ = enqueue of a no-op job to the same worker):")
    for k in ("bare_rq", "plan", "first_stage"):
        print(f"  {k:12s} median {med[k] * 1e3:8.1f} ms   p95 {_pct(lat[k], 0.95) * 1e3:8.1f} ms   all {[round(x * 1e3) for x in lat[k]]}")
    ls = lst["latencies"]
    n = len(ls)
    print(f"study list: {STUDIES} studies ({backend}, written in {fill_s:.1f} s), {CLIENTS} concurrent clients x {per_client} requests:")
    print(
        f"  p50 {_pct(ls, 0.5) * 1e3:.1f} ms  p95 {_pct(ls, 0.95) * 1e3:.1f} ms  p99 {_pct(ls, 0.99) * 1e3:.1f} ms  "
        f"{n / lst['wall']:.1f} requests/s  errors {len(lst['errors'])}"
    )
    summary = {
        "benchmark": "service",
        "backend": backend,
        "repeats": repeats,
        "submit_to_plan_start_ms": round(med["plan"] * 1e3, 1),
        "submit_to_first_stage_start_ms": round(med["first_stage"] * 1e3, 1),
        "bare_rq_start_ms": round(med["bare_rq"] * 1e3, 1),
        "first_stage_vs_bare_rq": round(med["first_stage"] / med["bare_rq"], 2),
        "list_studies": STUDIES,
        "list_clients": CLIENTS,
        "list_p50_ms": round(_pct(ls, 0.5) * 1e3, 1),
        "list_p95_ms": round(_pct(ls, 0.95) * 1e3, 1),
        "list_rps": round(n / lst["wall"], 1),
        "list_errors": len(lst["errors"]),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
