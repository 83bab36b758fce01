"""Time to interactive of a study page with a 101x101 surface, in headless Chromium.

A stub API (this process, a thread) serves one finished study whose figures are the API's shape (typed arrays); the
real dashboard runs as `python -m app.dashboard` against it. The study page's Landscape tab is timed until the contour
and the 3-D surface both hold their 101x101 grid, twice per round: cold (a new browser context opens the link) and in
the app (a visitor already on the dashboard follows a link, so plotly.js is loaded). Prints a table, then one JSON line.

    .venv/bin/python benchmarks/bench_dashboard.py [--loads 5] [--resolution 101]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from app.api.figures import encode, mask_ref, stage_ref
from app.api.figures import sparsity as sparsity_figure  # the API's encoder and readings: the stub speaks exactly like the API

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SID = "bench0000study"
NOW = "2026-01-01T00:00:00Z"


def typed(a) -> dict:
    """Encode as the API does (the API's own encoder: plotly typed array, float32 little-endian)."""
    return encode(a, "typed")


def payloads(n: int) -> dict[str, object]:
    """Return the stub API's answers by path: a finished study with 3 mask sources, 2 rounds, one n x n surface."""
    xs = np.linspace(-1.5, 1.5, n)
    X, Y = np.meshgrid(xs, xs)
    loss = 0.3 + X**2 + 0.5 * Y**2 + 0.3 * np.sin(4 * X) * np.cos(3 * Y)
    alphas = np.linspace(0, 1, 31)
    curves, table = [], []
    for source in ("imp", "random", "distilled.dm"):
        for rnd in (1, 2):
            sp = 100 * (1 - 0.8**rnd)
            err = 0.1 + 0.05 * rnd * np.sin(np.pi * alphas)
            curves.append(
                {
                    "stage": f"path/{source}-k0-r{rnd}/k0/p0",
                    "stage_ref": stage_ref(f"path/{source}-k0-r{rnd}/k0/p0"),
                    "mask": f"{source}-k0-r{rnd}",
                    "source": source,
                    "round": rnd,
                    "rewind_step": 0,
                    "pair": 0,
                    "sparsity": sp,
                    "alphas": typed(alphas),
                    "error": {"test": typed(err), "train": typed(err * 0.8)},
                    "loss": {"test": typed(err * 3), "train": typed(err * 2)},
                }
            )
            table.append(
                {
                    "source": source,
                    "round": rnd,
                    "mask": f"{source}-k0-r{rnd}",
                    "mask_ref": mask_ref(f"{source}-k0-r{rnd}"),
                    "rewind_step": 0,
                    "sparsity": sp,
                    "accuracy_mean": 96 - rnd,
                    "error_barrier": 2.0 * rnd,
                    "error_barrier_std": 0.0,
                    "loss_barrier": 0.1,
                    "loss_barrier_std": 0.0,
                    "training_points": 1000,
                }
            )
    series = sparsity_figure(table)["series"]  # the API's own grouping of the study table
    stage, hstage = "surface/imp-k0-r2/k0/p0", "hessian/imp-k0-r2/k0/p0"
    study: dict[str, Any] = {
        "id": SID,
        "name": "bench",
        "run_id": "bench",
        "preset": None,
        "status": "finished",
        "archived": False,
        "owner": "bench",
        "parent_id": None,
        "submitted": True,
        "tags": [],
        "stages_done": 10,
        "stages_total": 10,
        "error": None,
        "created_at": NOW,
        "updated_at": NOW,
        "started_at": NOW,
        "finished_at": NOW,
        "config": {},
        "progress": None,
    }
    grid = np.linspace(0, 3, 80)
    return {
        "/api/me": {"user": None, "role": None, "anonymous": True},
        "/api/health": {"status": "ok", "version": "bench", "workers": 0},
        f"/api/studies/{SID}": study,
        f"/api/studies/{SID}/progress": {
            "study_id": SID,
            "status": "finished",
            "done": 10,
            "total": 10,
            "fraction": 1.0,
            "eta_s": None,
            "running": [],
            "failed": [],
            "log_tail": ["done"],
            "error": None,
            "updated_at": NOW,
        },
        f"/api/studies/{SID}/figures": {
            "study_id": SID,
            "figures": {"interpolation": [], "sparsity": [], "surface": [stage], "hessian": [hstage]},
            "stage_refs": {"interpolation": [], "sparsity": [], "surface": [stage_ref(stage)], "hessian": [stage_ref(hstage)]},
        },
        f"/api/studies/{SID}/results": {
            "study_id": SID,
            "run_id": "bench",
            "status": "finished",
            "available": True,
            "table": table,
            "analysis": [{"mask": "imp-k0-r2", "mask_ref": mask_ref("imp-k0-r2"), "lambda_max": 2.0, "trace": 30.0, "trace_stderr": 1.0}],
            "synthetic": [],
            "stages": {},
            "updated_at": NOW,
        },
        f"/api/studies/{SID}/figures/sparsity": {"study_id": SID, "figure": "sparsity", "encoding": "list", "series": series, "sweep": []},
        f"/api/studies/{SID}/figures/interpolation": {"study_id": SID, "figure": "interpolation", "encoding": "typed", "curves": curves},
        f"/api/studies/{SID}/figures/surface": {
            "study_id": SID,
            "figure": "surface",
            "encoding": "typed",
            "stage": stage,
            "stage_ref": stage_ref(stage),
            "split": "test",
            "splits": ["test"],
            "plane": "copies",
            "span": 1.5,
            "resolution": n,
            "loss_min": float(loss.min()),
            "loss_max": float(loss.max()),
            "x": typed(xs),
            "y": typed(xs),
            "loss": typed(loss),
            "error": typed(loss / loss.max()),
            "points": {"rewind": [0, 0], "A": [1, 0], "B": [0.4, 1.1]},
        },
        f"/api/studies/{SID}/figures/hessian": {
            "study_id": SID,
            "figure": "hessian",
            "encoding": "typed",
            "stage": hstage,
            "stage_ref": stage_ref(hstage),
            "top_eigenvalues": [2.0, 1.5],
            "trace": 30.0,
            "trace_stderr": 1.0,
            "density": {"grid": typed(grid), "values": typed(np.exp(-grid))},
            "diagonal_histogram": None,
        },
        f"/api/studies/{SID}/artifacts": [],
    }


def serve_stub(answers: dict[str, object]) -> tuple[ThreadingHTTPServer, str]:
    """Start the stub API on a free port; return the server and its URL."""
    blobs = {k: json.dumps(v).encode() for k, v in answers.items()}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            body = blobs.get(urlparse(self.path).path)
            self.send_response(200 if body else 404)
            self.send_header("Content-Type", "application/json")
            body = body or b'{"detail": "not in the stub"}'
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, f"http://127.0.0.1:{srv.server_address[1]}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


READY_JS = """() => {
    const ok = (id, f) => { const gd = document.querySelector('#' + id + ' .js-plotly-plot');
        if (!gd || !gd._fullData || !gd._fullData.length) return false; const v = gd._fullData[0][f]; return !!v && v.length > 0; };
    return ok("st-contour", "z") && ok("st-surface3d", "z");
}"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--loads", type=int, default=5)
    p.add_argument("--resolution", type=int, default=101)
    args = p.parse_args()
    if not Path(CHROMIUM).exists():
        sys.exit(f"{CHROMIUM} is missing (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    srv, api_url = serve_stub(payloads(args.resolution))
    port = free_port()
    dash_proc = subprocess.Popen(
        [sys.executable, "-m", "app.dashboard", "--host", "127.0.0.1", "--port", str(port), "--api-url", api_url],
        cwd=ROOT,
        env=dict(os.environ, OMP_NUM_THREADS="1"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(url + "/", timeout=1)
                break
            except OSError:
                time.sleep(0.25)
        cold: list[float] = []
        nav: list[float] = []
        typed_ok = False
        target = f"/study/{SID}?tab=landscape"
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
            for i in range(args.loads + 1):  # load 0 warms the server's and the browser's caches; it is reported apart
                # cold: a new browser context (empty cache) opens the surface page's link
                ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
                page = ctx.new_page()
                t0 = time.perf_counter()
                page.goto(url + target)
                page.wait_for_function(READY_JS, timeout=60_000, polling=50)
                dt = time.perf_counter() - t0
                typed_ok = page.evaluate(
                    "(() => { const gd = document.querySelector('#st-surface3d .js-plotly-plot'); "
                    "return !!(gd.data[0].z && gd.data[0].z.bdata); })()"
                )
                # in the app: from the gallery, follow a link to the study (Dash routes it without reloading the page)
                page.goto(url + "/gallery")
                page.wait_for_function("() => !!window.Plotly && !!document.querySelector('#ga-cards')", timeout=60_000)
                t1 = time.perf_counter()
                page.evaluate(
                    f"() => {{ window.history.pushState({{}}, '', '{target}'); window.dispatchEvent(new PopStateEvent('popstate')); }}"
                )
                page.wait_for_function(READY_JS, timeout=60_000, polling=50)
                dn = time.perf_counter() - t1
                if i:
                    cold.append(dt)
                    nav.append(dn)
                print(
                    f"load {i}{' (warm-up)' if i == 0 else ''}: cold {dt:.2f} s, in-app {dn:.2f} s, surface sent as typed array: {typed_ok}"
                )
                ctx.close()
            browser.close()
    finally:
        dash_proc.terminate()
        dash_proc.wait(timeout=10)
        srv.shutdown()
    med, nmed = statistics.median(cold), statistics.median(nav)
    print("\n| page load | loads | resolution | median s | min s | max s |\n|---|---|---|---|---|---|")
    for name, t in (("cold (new context, link opened)", cold), ("in the app (link followed)", nav)):
        print(f"| {name} | {len(t)} | {args.resolution}x{args.resolution} | {statistics.median(t):.2f} | {min(t):.2f} | {max(t):.2f} |")
    print(
        json.dumps(
            {
                "benchmark": "dashboard-surface",
                "time_to_interactive_s": round(med, 3),
                "in_app_navigation_s": round(nmed, 3),
                "min_s": round(min(cold), 3),
                "max_s": round(max(cold), 3),
                "loads": len(cold),
                "resolution": args.resolution,
                "typed_arrays": bool(typed_ok),
                "browser": "chromium headless (system)",
            }
        )
    )


if __name__ == "__main__":
    main()
