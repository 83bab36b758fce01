"""The exact Hessian diagonal: the Gauss-Newton route vs one Hessian-vector product per weight.

Run from the repository root: `.venv/bin/python benchmarks/bench_diagonal.py [--repeats 3] [--hvp-repeats 1] [--models m-mlp cnn]`.

Models (bench_hessian's fixtures): M-MLP 64-128-128-10 (P = 26,122; 1,024 examples) and ConvNetBN-D3W16 in eval mode
(P = 7,754; 128 examples), trained 300 Adam steps on teacher-labelled data; the Hessian of the mean cross-entropy on
that batch, float32. Both are piecewise linear in every weight (ReLU, average pooling, eval-mode BatchNorm), so
`exact_diagonal(op)` takes the Gauss-Newton route for all of them; `exact_diagonal(op, route="hvp")` is the
per-weight products (64 unit vectors per block, the library default). Timed: operator construction plus the diagonal.

Before any time counts, the two diagonals must agree: max |ggn - hvp| / max |hvp| <= 1e-4 (float32 rounding; the
tests check 1e-10 in float64). Every (route, model, repeat) runs in a fresh subprocess pinned to 2 threads, routes
interleaved, medians. Prints a table; the last line is one JSON object with the speed-ups (products / GGN).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import _harness as H

SCRIPT = Path(__file__).resolve()
MODELS = ("m-mlp", "cnn")
ROUTES = ("auto", "hvp")
GATE = 1e-4


def worker(task: dict) -> dict:
    """Time one exact diagonal by `task['route']`; save its values to `task['out']` (.npy)."""
    H.pin_threads()
    import numpy as np

    from lmc_core.hessian.diagonal import exact_diagonal
    from lmc_core.hessian.operator import HessianOperator

    model, x, y = H.load_fixture(task["model"], task["path"])
    with H.Timer() as t:
        op = HessianOperator(model, [(x, y)], mode="eval")
        d = exact_diagonal(op, route=task["route"])
    np.save(task["out"], d.values.double().numpy(), allow_pickle=False)
    return {"name": task["name"], "seconds": t.s, "method": d.method, "hvps": op.hvps, "ggn": d.ggn, "dim": op.dim}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--repeats", type=int, default=3, help="repeats of the Gauss-Newton route")
    parser.add_argument("--hvp-repeats", type=int, default=None, help="repeats of the products (default: --repeats)")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    import numpy as np

    hvp_repeats = args.repeats if args.hvp_repeats is None else args.hvp_repeats
    print(H.machine_line())
    out = Path(tempfile.mkdtemp(prefix="lmc_bench_diagonal_"))
    rows, summary = [], {}
    for kind in args.models:
        path = str(H.fixture(kind))
        tasks = {r: {"name": f"{kind}:{r}", "model": kind, "path": path, "route": r, "out": str(out / f"{kind}-{r}.npy")} for r in ROUTES}
        runs: dict[str, list[dict]] = {r: [] for r in ROUTES}
        for i in range(max(args.repeats, hvp_repeats)):  # interleaved: GGN, products, GGN, ...
            for r in ROUTES:
                if i < (args.repeats if r == "auto" else hvp_repeats):
                    runs[r].append(H.run_worker(SCRIPT, tasks[r], timeout=7200.0))
        ggn, hvp = (np.load(tasks[r]["out"], allow_pickle=False) for r in ROUTES)
        err = float(np.abs(ggn - hvp).max() / np.abs(hvp).max())
        if err > GATE:
            raise SystemExit(f"{kind}: the routes disagree (max rel err {err:.2e} > {GATE:g}); no timing counts")
        t_ggn, t_hvp = H.median([r["seconds"] for r in runs["auto"]]), H.median([r["seconds"] for r in runs["hvp"]])
        meta = runs["auto"][0]
        rows.append(
            [
                kind,
                meta["dim"],
                meta["method"],
                f"{t_ggn:.2f} (n={len(runs['auto'])})",
                f"{t_hvp:.1f} (n={len(runs['hvp'])})",
                runs["hvp"][0]["hvps"],
                f"{t_hvp / t_ggn:.0f}x",
                f"{err:.1e}",
            ]
        )
        summary[kind] = {"ggn_s": t_ggn, "hvp_s": t_hvp, "speedup": t_hvp / t_ggn, "max_rel_err": err, "method": meta["method"]}
    print("\nexact Hessian diagonal: Gauss-Newton route vs one product per weight (medians, seconds)")
    print(H.table(rows, ["model", "P", "auto route", "GGN s", "products s", "HVPs", "speed-up", "max rel diff"]))
    print(json.dumps({"bench": "diagonal", **summary}))


if __name__ == "__main__":
    main()
