"""Copies of one subnetwork that differ only in SGD noise: trained one after another, or in lockstep when that is exact and faster."""

from __future__ import annotations

import copy

from torch import nn

from lmc_core.data.augment import Augmenter
from lmc_core.data.dataset import Dataset
from lmc_core.foundations.config import TrainConfig
from lmc_core.foundations.events import Callback, no_callback
from lmc_core.foundations.types import Masks
from lmc_core.train.loop import TrainResult, train
from lmc_core.train.stacked import choose_copies_strategy, train_stacked


def train_copies(
    model: nn.Module,
    data: Dataset,
    cfg: TrainConfig,
    augmenter: Augmenter,
    *,
    seeds: list[tuple[int, int]],
    masks: Masks | None = None,
    start_step: int = 0,
    end_step: int | None = None,
    stage: str = "train",
    callback: Callback = no_callback,
    strategy: str = "loop",
) -> list[TrainResult]:
    """Train one copy of `model`'s current state per (data_seed, augment_seed) and return their results, in order.

    The copies share the init and the mask and differ only in SGD noise. `model` itself is not trained.
    `strategy`: "loop" trains them one after the other; "stacked" trains them in lockstep with stacked
    parameters (lmc_core.train.stacked: bit-identical for MLPs, norm-free ConvNets and plain Sequentials,
    equal up to rounding through vmap for other models, refused for BatchNorm); "auto" picks stacked
    only where it is bit-identical and benchmarks/bench_batched_copies.py measured it faster.
    """
    if strategy not in ("loop", "stacked", "auto"):
        raise ValueError(f"unknown strategy {strategy!r}; use 'loop', 'stacked' or 'auto'")
    if strategy != "loop" and (strategy == "stacked" or choose_copies_strategy(model, len(seeds)) == "stacked"):
        return train_stacked(
            model,
            data,
            cfg,
            augmenter,
            seeds=seeds,
            masks=masks,
            start_step=start_step,
            end_step=end_step,
            stage=stage,
            callback=callback,
        )
    start = {k: v.clone() for k, v in model.state_dict().items()}
    results = []
    for i, (data_seed, augment_seed) in enumerate(seeds):
        replica = copy.deepcopy(model)
        replica.load_state_dict(start)
        results.append(
            train(
                replica,
                data,
                cfg,
                augmenter,
                data_seed=data_seed,
                augment_seed=augment_seed,
                masks=masks,
                start_step=start_step,
                end_step=end_step,
                stage=f"{stage}[{i}]",
                callback=callback,
            )
        )
    return results
