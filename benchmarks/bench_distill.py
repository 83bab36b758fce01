"""Distilled sets vs a random real subset of the same size: test accuracy and time, on digits and MNIST-1D.

Run from the repository root: `.venv/bin/python benchmarks/bench_distill.py [--quick] [--datasets digits mnist1d]`.
For each dataset it distils 10 examples per class with DM, DC and MTT (MTT's expert training
timed separately), then scores every set with the project's evaluation protocol
(`lmc_core.distill.evaluation.evaluate_set`): fresh networks trained on the set, on a class-matched
random real subset and on noise, same recipe and seeds, test accuracy mean and std. Prints a
table; the last line is one JSON object with each method's accuracy, its margin over the random
subset and its time. A distilled set that does not beat the random subset is a finding to explain.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lmc_core.data.dataset import load_dataset
from lmc_core.data.dsa import DSA, resolve_strategy
from lmc_core.distill.evaluation import evaluate_set
from lmc_core.distill.experts import train_experts
from lmc_core.distill.methods import distill
from lmc_core.foundations.config import DataConfig, DistillConfig, ModelConfig, TrainConfig

# The settings of the paper-mini preset (tuned on MNIST-1D; see lmc_core/studies/presets.py), the same on digits.
MTT = {
    "experts": 5,
    "expert_train_epochs": 12,
    "lr_teacher": 0.05,
    "expert_batch": 64,
    "syn_steps": 40,
    "expert_epochs": 2,
    "max_start_epoch": 8,
    "lr_lr": 1e-4,
}
# The networks the studies use: MNIST-1D's ConvNet (docs/results.md) and a small 2-D ConvNet for 8x8 digits.
SETTINGS: dict[str, dict[str, Any]] = {
    "mnist1d": {
        "data": DataConfig(name="mnist1d"),
        "model": ModelConfig(arch="convnet", depth=3, width=64, kernel_size=5, stride=2),
        "methods": {
            "dm": {"method": "dm", "iterations": 300, "lr_img": 10.0, "batch_real": 128},
            "dc": {"method": "dc", "iterations": 50, "lr_img": 0.1, "batch_real": 64, "dc": {"outer_loop": 5, "inner_loop": 5}},
            "mtt": {"method": "mtt", "iterations": 150, "lr_img": 5.0, "mtt": MTT},
        },
    },
    "digits": {
        "data": DataConfig(name="digits"),
        "model": ModelConfig(arch="convnet", depth=2, width=32, kernel_size=3, pooling="avg"),
        "methods": {
            "dm": {"method": "dm", "iterations": 300, "lr_img": 10.0, "batch_real": 64},
            "dc": {"method": "dc", "iterations": 50, "lr_img": 0.1, "batch_real": 64, "dc": {"outer_loop": 5, "inner_loop": 5}},
            "mtt": {"method": "mtt", "iterations": 150, "lr_img": 5.0, "mtt": MTT},
        },
    },
}
# Training on 100 examples: the paper's inner recipe (SGD 0.01, momentum 0.9, wd 5e-4, x0.2 at 2/3 and 5/6), 300 epochs.
RECIPE = TrainConfig(
    lr=0.01, momentum=0.9, weight_decay=5e-4, batch_size=50, epochs=300, schedule="multistep", milestones=[200, 250], gamma=0.2
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    ap.add_argument("--methods", nargs="+", default=["dm", "dc", "mtt"], choices=["dm", "dc", "mtt"])
    ap.add_argument("--ipc", type=int, default=10)
    ap.add_argument("--runs", type=int, default=3, help="fresh networks per evaluated set")
    ap.add_argument("--device", default="cpu", help="cpu or cuda: where data, distillation and evaluation run")
    ap.add_argument(
        "--quick", action="store_true", help="a tenth of the iterations and one evaluation run: checks the script, not the numbers"
    )
    args = ap.parse_args()

    results: dict[str, dict] = {}
    print(
        f"{'dataset':8} {'method':6} {'distilled %':>14} {'random subset %':>16} {'noise %':>9} {'margin':>7} {'distill s':>10} "
        f"{'experts s':>10} {'subset at recipe lr %':>22}"
    )
    for name in args.datasets:
        spec = SETTINGS[name]
        data = load_dataset(spec["data"]).to(args.device)
        dsa = DSA(resolve_strategy("auto", data.kind), data.kind)
        results[name] = {}
        for method in args.methods:
            raw = dict(spec["methods"][method], ipc=args.ipc, seed=0)
            if args.quick:
                raw["iterations"] = max(1, raw["iterations"] // 10)
            cfg = DistillConfig.model_validate(raw)
            experts, expert_seconds = None, 0.0
            if method == "mtt":
                t0 = time.perf_counter()
                experts, _ = train_experts(data, spec["model"], cfg.mtt, DSA(resolve_strategy(cfg.dsa, data.kind), data.kind), seed=0)
                expert_seconds = time.perf_counter() - t0
            made = distill(cfg, data, spec["model"], experts=experts)
            scores = evaluate_set(made.synthetic, data, spec["model"], RECIPE, dsa, runs=1 if args.quick else args.runs, seed=0)
            syn, sub, noise = scores["synthetic"], scores["random_subset"], scores["noise"]
            margin = syn["mean"] - sub["mean"]
            results[name][method] = {
                "accuracy": syn["mean"],
                "accuracy_std": syn["std"],
                "random_subset": sub["mean"],
                "random_subset_std": sub["std"],
                "noise": noise["mean"],
                "margin_over_random_subset": margin,
                "random_subset_at_recipe_lr": scores.get("random_subset_recipe_lr", {}).get("mean"),
                "distill_seconds": made.seconds,
                "expert_seconds": expert_seconds,
                "learned_lr": made.synthetic.lr,
                "iterations": cfg.iterations,
                "loss_first": made.losses[0],
                "loss_last": made.losses[-1],
            }
            print(
                f"{name:8} {method:6} {syn['mean']:8.1f} ± {syn['std']:3.1f} {sub['mean']:10.1f} ± {sub['std']:3.1f} {noise['mean']:9.1f} "
                f"{margin:+7.1f} {made.seconds:10.1f} {expert_seconds:10.1f} "
                f"{results[name][method]['random_subset_at_recipe_lr'] or float('nan'):22.1f}",
                flush=True,
            )
    device = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    print(
        json.dumps(
            {
                "benchmark": "distill",
                "device": device,
                "ipc": args.ipc,
                "runs": args.runs,
                "torch_threads": torch.get_num_threads(),
                "results": results,
            }
        )
    )


if __name__ == "__main__":
    main()
