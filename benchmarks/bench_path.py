"""Loop vs batched (vmap over stacked parameters) evaluation of a 31-alpha linear path on CPU.

Run from the repository root: `.venv/bin/python benchmarks/bench_path.py`. Prints a table and, as
the last line, one JSON object whose ratios are loop time / batched time (> 1: batched is faster).
These numbers decide `lmc_core.connectivity.path.choose_strategy`.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lmc_core.connectivity.engine import choose_strategy
from lmc_core.connectivity.path import PathResult, alpha_grid, evaluate_path

N_ALPHAS = 31
REPEATS = 7


def mlp() -> nn.Module:
    """Return the MLP 40-100-100-10."""
    return nn.Sequential(nn.Linear(40, 100), nn.ReLU(), nn.Linear(100, 100), nn.ReLU(), nn.Linear(100, 10))


def conv1d_net() -> nn.Module:
    """Return 3 conv1d blocks (k5, stride 2, pad 2, width 64) + linear, for (1, 40) inputs."""
    layers: list[nn.Module] = []
    channels = 1
    for _ in range(3):
        layers += [nn.Conv1d(channels, 64, 5, stride=2, padding=2), nn.ReLU()]
        channels = 64
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(64 * 5, 10))


def two_copies(build) -> tuple[nn.Module, dict, dict]:
    """Return a template and two independently initialised states of the same architecture."""
    torch.manual_seed(1)
    a = build().state_dict()
    torch.manual_seed(2)
    b = build().state_dict()
    return build(), a, b


def run_case(name: str, build, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> dict:
    """Return median timings of both strategies on one case, after checking that they agree."""
    model, a, b = two_copies(build)
    splits = {"test": (x, y)}
    alphas = alpha_grid(N_ALPHAS)

    def timed(strategy: str) -> tuple[float, PathResult]:
        t0 = time.perf_counter()
        res = evaluate_path(model, a, b, splits, alphas, batch_size=batch_size, strategy=strategy)
        return time.perf_counter() - t0, res

    _, loop_res = timed("loop")  # also a warm-up
    _, batched_res = timed("batched")
    diff = max(
        float(np.max(np.abs(loop_res.loss["test"] - batched_res.loss["test"]))),
        float(np.max(np.abs(loop_res.error["test"] - batched_res.error["test"]))),
    )
    if diff > 1e-5:
        raise SystemExit(f"{name}: loop and batched disagree by {diff:.2e}; timings would be meaningless")

    times: dict[str, list[float]] = {"loop": [], "batched": []}
    for _ in range(REPEATS):  # interleaved, so drift in machine load hits both strategies alike
        for strategy in ("loop", "batched"):
            times[strategy].append(timed(strategy)[0])
    loop_s, batched_s = statistics.median(times["loop"]), statistics.median(times["batched"])
    return {
        "case": name,
        "loop_s": loop_s,
        "batched_s": batched_s,
        "ratio": loop_s / batched_s,
        "max_diff": diff,
        "auto": choose_strategy(model, min(batch_size, len(x))),
        "faster": "batched" if loop_s > batched_s else "loop",
    }


def main() -> None:
    torch.set_num_threads(2)
    gen = torch.Generator().manual_seed(0)
    x_flat = torch.randn(1000, 40, generator=gen)
    x_seq = x_flat.unsqueeze(1)  # (1000, 1, 40)
    y = torch.randint(0, 10, (1000,), generator=gen)

    cases = [
        ("mlp", "MLP 40-100-100-10, 1000 inputs, batch 1000", mlp, x_flat, 1000),
        ("conv1d", "Conv1d 3x64 k5 s2, 1000 inputs, batch 1000", conv1d_net, x_seq, 1000),
        ("mlp_b32", "MLP 40-100-100-10, 1000 inputs, batch 32", mlp, x_flat, 32),
        # The second branch of the auto rule: small evaluation batches favour vmap even for convs.
        ("conv1d_b64", "Conv1d 3x64 k5 s2, 1000 inputs, batch 64", conv1d_net, x_seq, 64),
    ]
    results = {key: run_case(key, build, x, y, bs) for key, _, build, x, bs in cases}

    print(f"threads={torch.get_num_threads()} torch={torch.__version__} alphas={N_ALPHAS} repeats={REPEATS} (median)")
    print(f"{'case':<46} {'loop s':>8} {'batched s':>10} {'loop/batched':>13} {'max |diff|':>11} {'faster':>8} {'auto':>8}")
    for key, label, *_ in cases:
        r = results[key]
        print(
            f"{label:<46} {r['loop_s']:>8.4f} {r['batched_s']:>10.4f} {r['ratio']:>13.2f} {r['max_diff']:>11.1e} "
            f"{r['faster']:>8} {r['auto']:>8}"
        )
    # auto picks per evaluation batch size: loop at 1000 rows, batched at small batches (choose_strategy).
    summary = {"benchmark": "path", "alphas": N_ALPHAS, "threads": torch.get_num_threads()}
    for key in results:
        summary[f"{key}_batched_over_loop"] = round(results[key]["ratio"], 3)
        summary[f"{key}_loop_s"] = round(results[key]["loop_s"], 4)
        summary[f"{key}_batched_s"] = round(results[key]["batched_s"], 4)
        summary[f"{key}_auto"] = results[key]["auto"]
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
