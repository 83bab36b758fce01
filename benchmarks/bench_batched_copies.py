"""Loop vs stacked (lockstep, stacked parameters) training of SGD-noise copies on CPU.

Run from the repository root: `.venv/bin/python benchmarks/bench_batched_copies.py [--quick]`.
Trains 2 copies (and 4 = two seed pairs, for the MLP) for 2 epochs of MNIST-1D with shift
augmentation (and of sklearn digits for a Conv2d net), both ways, interleaved, after checking that
they agree (bit for bit on the folded path), and prints a table; the last line is one JSON object
whose speedups are loop time / stacked time (> 1: stacked is faster). These numbers decide
`lmc_core.train.stacked.choose_copies_strategy`. Takes about 2 minutes on the project's 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lmc_core.data.augment import Augmenter
from lmc_core.data.dataset import Dataset, load_dataset
from lmc_core.foundations.config import DataConfig, ModelConfig, TrainConfig
from lmc_core.foundations.types import Masks
from lmc_core.models import build_model
from lmc_core.prune.magnitude import dense_masks
from lmc_core.train.copies import train_copies
from lmc_core.train.loop import TrainResult
from lmc_core.train.stacked import choose_copies_strategy, folded_plan

CHECK_STEPS = 20  # the agreement check before timing: short, so chaotic growth of rounding differences stays small
VMAP_ATOL = 1e-5  # the vmap path is equal only up to rounding (bmm, grouped convs); the folded path must be exact

MLP = ModelConfig(arch="mlp", hidden=[100, 100])
CONVNET = ModelConfig(arch="convnet", depth=3, width=64, kernel_size=5, stride=2)
CONV2D = ModelConfig(arch="convnet", depth=3, width=32, kernel_size=3, stride=1)


@dataclass(frozen=True)
class Case:
    key: str
    label: str
    model: ModelConfig
    dataset: str = "mnist1d"
    lr: float = 0.1  # the calibrated presets (docs/results.md): MLP lr 0.1, ConvNet lr 0.05; SGD momentum 0.9, bs 32
    copies: int = 2
    masked: bool = False  # pruned copies (IMP rounds >= 1): masks applied after every step
    wrapped: bool = False  # behind a wrapper whose forward train_stacked cannot know: the generic vmap path


CASES = [
    Case("mlp_2copies", "MLP 40-100-100-10, 2 copies", MLP),
    Case("mlp_2copies_masked", "MLP, 2 copies, 50% random masks", MLP, masked=True),
    Case("convnet_2copies", "ConvNet 3x64 k5 s2 (Conv1d), 2 copies", CONVNET, lr=0.05),
    Case("mlp_4copies", "MLP 40-100-100-10, 4 copies (2 pairs)", MLP, copies=4),
    Case("conv2d_2copies", "digits ConvNet 3x32 k3 (Conv2d), 2 copies", CONV2D, dataset="digits", lr=0.05),
    Case("mlp_vmap_2copies", "MLP via vmap(functional_call), 2 copies", MLP, wrapped=True),
]


class Wrapped(nn.Module):
    """An opaque wrapper: its forward is user code, so train_stacked must use vmap, not the folded path."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)


def max_abs_diff(a: list[TrainResult], b: list[TrainResult]) -> float:
    """Return the largest |difference| over every copy's final weights."""
    return max(float((ra.state[k] - rb.state[k]).abs().max()) for ra, rb in zip(a, b, strict=True) for k in ra.state)


def half_masks(model: nn.Module) -> Masks:
    """Return random masks keeping about half of every prunable weight."""
    g = torch.Generator().manual_seed(0)
    return {n: torch.rand(m.shape, generator=g) < 0.5 for n, m in dense_masks(model).items()}


def run_case(case: Case, data: Dataset, augmenter: Augmenter, epochs: int, repeats: int) -> dict:
    """Return median wall times of both strategies for one case, after checking that they agree."""
    model = build_model(case.model, data.input_shape, data.num_classes, seed=0)
    model = Wrapped(model) if case.wrapped else model
    masks = half_masks(model) if case.masked else None
    seeds = [(100 + i, 100 + i) for i in range(case.copies)]
    cfg = TrainConfig(lr=case.lr, momentum=0.9, batch_size=32, epochs=epochs, schedule="cosine")
    folded = folded_plan(model) is not None

    def timed(strategy: str, end_step: int | None = None) -> tuple[float, list[TrainResult]]:
        t0 = time.perf_counter()
        res = train_copies(model, data, cfg, augmenter, seeds=seeds, masks=masks, end_step=end_step, strategy=strategy)
        return time.perf_counter() - t0, res

    check = max_abs_diff(timed("loop", CHECK_STEPS)[1], timed("stacked", CHECK_STEPS)[1])  # also the warm-up
    if check > (0.0 if folded else VMAP_ATOL):
        raise SystemExit(f"{case.key}: loop and stacked disagree by {check:.2e} after {CHECK_STEPS} steps; timings would be meaningless")
    times: dict[str, list[float]] = {"loop": [], "stacked": []}
    last: dict[str, list[TrainResult]] = {}
    for _ in range(repeats):  # interleaved, so drift in machine load hits both strategies alike
        for strategy in ("loop", "stacked"):
            seconds, last[strategy] = timed(strategy)
            times[strategy].append(seconds)
    loop_s, stacked_s = statistics.median(times["loop"]), statistics.median(times["stacked"])
    return {
        "loop_s": loop_s,
        "stacked_s": stacked_s,
        "speedup": loop_s / stacked_s,
        "check_diff": check,
        "final_diff": max_abs_diff(last["loop"], last["stacked"]),
        "history_equal": all(a.history == b.history for a, b in zip(last["loop"], last["stacked"], strict=True)),
        "steps": last["loop"][0].end_step,
        "auto": choose_copies_strategy(model, len(seeds)),
        "path": "folded" if folded else "vmap",
        "loop_results": last["loop"],
    }


def run_all(threads: int, datasets: dict[str, tuple[Dataset, Augmenter]], epochs: int, repeats: int, keys: list[str]) -> dict[str, dict]:
    """Return run_case's results for the cases in `keys` at `threads` intra-op threads."""
    torch.set_num_threads(threads)
    return {case.key: run_case(case, *datasets[case.dataset], epochs, repeats) for case in CASES if case.key in keys}


def print_table(threads: int, results: dict[str, dict]) -> None:
    """Print one row per case."""
    labels = {case.key: case.label for case in CASES}
    print(f"\nthreads={threads} torch={torch.__version__} (median of interleaved repeats)")
    print(
        f"{'case':<44} {'steps':>5} {'loop s':>8} {'stacked s':>10} {'speedup':>8} {'diff@' + str(CHECK_STEPS):>9} {'diff@end':>9} "
        f"{'hist=':>6} {'path':>7} {'auto':>8}"
    )
    for key, r in results.items():
        print(
            f"{labels[key]:<44} {r['steps']:>5} {r['loop_s']:>8.3f} {r['stacked_s']:>10.3f} {r['speedup']:>8.2f} "
            f"{r['check_diff']:>9.1e} {r['final_diff']:>9.1e} {r['history_equal']!s:>6} {r['path']:>7} {r['auto']:>8}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 epoch, 3 repeats, no 1-thread run (a smoke test)")
    args = parser.parse_args()
    epochs, repeats = (1, 3) if args.quick else (2, 5)
    datasets = {}
    for name, augmentation in (("mnist1d", "shift"), ("digits", "crop_flip")):
        dcfg = DataConfig(name=name, augmentation=augmentation, crop_padding=1)
        data = load_dataset(dcfg)
        datasets[name] = (data, Augmenter(dcfg, data.kind))
    all_keys = [case.key for case in CASES]

    results = run_all(2, datasets, epochs, repeats, all_keys)
    print_table(2, results)
    one = {} if args.quick else run_all(1, datasets, epochs, 3, ["mlp_2copies", "convnet_2copies"])
    if one:
        print_table(1, one)

    summary: dict[str, object] = {"benchmark": "batched-copies", "threads": 2, "epochs": epochs, "repeats": repeats}
    for key, r in results.items():
        summary[f"{key}_speedup"] = round(r["speedup"], 3)
        summary[f"{key}_loop_s"] = round(r["loop_s"], 3)
        summary[f"{key}_stacked_s"] = round(r["stacked_s"], 3)
        summary[f"{key}_auto"] = r["auto"]
    for key, r in one.items():
        summary[f"{key}_speedup_1thread"] = round(r["speedup"], 3)
    exact = [r for r in [*results.values(), *one.values()] if r["path"] == "folded"]
    vmapped = [r for r in results.values() if r["path"] == "vmap"]
    # Folded (what auto uses): bit-identical to the loop, after the full run too. vmap: rounding-level.
    summary["max_abs_diff"] = max(r["final_diff"] for r in exact)
    summary["vmap_max_abs_diff_check"] = max(r["check_diff"] for r in vmapped)  # after CHECK_STEPS steps
    summary["vmap_max_abs_diff_end"] = max(r["final_diff"] for r in vmapped)  # after the full run: chaotic growth
    if one:
        # A yardstick for vmap's differences: the loop itself changes this much with 1 thread instead of 2.
        thread_diff = max(max_abs_diff(results[k]["loop_results"], one[k]["loop_results"]) for k in one)
        print(f"\nloop with 1 thread vs loop with 2 threads, same cases, max |diff| after the full run: {thread_diff:.1e}")
        summary["loop_1vs2_threads_diff_end"] = thread_diff
    print(json.dumps(summary))
    torch.set_num_threads(2)


if __name__ == "__main__":
    main()
