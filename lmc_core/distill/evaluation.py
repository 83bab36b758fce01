"""Training on small sets, and the evaluation protocol that says what a distilled set is worth.

A distillation number means little alone (DD-Ranking): the set is scored by fresh networks trained
on it, next to the same protocol on a random real subset with the same class counts and on a noise
set with the same labels. Everything but the data is identical across the three: network, recipe
(including an MTT set's learned lr), augmentation and seeds.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from lmc_core.data.dataset import Dataset
from lmc_core.data.dsa import DSA
from lmc_core.distill.synthetic import SyntheticSet, decode_labels, noise_like, random_subset
from lmc_core.foundations.config import ModelConfig, TrainConfig
from lmc_core.foundations.events import Callback, no_callback
from lmc_core.foundations.seeding import derive_seed
from lmc_core.models import build_model
from lmc_core.train.evaluation import evaluate
from lmc_core.train.loop import train


def recipe(train_cfg: TrainConfig, learned_lr: float | None) -> TrainConfig:
    """Return the training config for a synthetic set: `train_cfg`, with the set's learned lr when it has one."""
    return train_cfg if learned_lr is None else train_cfg.model_copy(update={"lr": learned_lr})


def class_counts(s: SyntheticSet) -> list[int]:
    """Return the decoded examples per class: what a size-matched real subset must hold."""
    return torch.bincount(decode_labels(s.labels, s.factor, s.kind), minlength=s.num_classes).tolist()


def matched_subset(s: SyntheticSet, real: Dataset, seed: int) -> SyntheticSet:
    """Return the random real subset with `s`'s decoded class counts (the same subset for a given seed)."""
    return random_subset(real.to("cpu"), class_counts(s), derive_seed(seed, "matched-subset"))


def evaluate_set(
    s: SyntheticSet,
    real: Dataset,
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    augmenter: DSA,
    *,
    runs: int,
    seed: int,
    stage: str = "synthetic-eval",
    callback: Callback = no_callback,
) -> dict[str, Any]:
    """Train `runs` fresh networks on `s`, on a matched random subset and on noise; return test accuracy mean, std and values.

    A set with a learned lr (MTT) trains all three with it; `random_subset_recipe_lr` adds the subset at
    the recipe's own lr, which separates what the learned lr is worth from what the images are worth.
    """

    cfg = recipe(train_cfg, s.lr)
    subset = matched_subset(s, real, seed)
    candidates = {"synthetic": (s, cfg), "random_subset": (subset, cfg), "noise": (noise_like(s, derive_seed(seed, "noise")), cfg)}
    if s.lr is not None:  # what the learned lr alone is worth: the same subset at the recipe's own lr
        candidates["random_subset_recipe_lr"] = (subset, train_cfg)
    out: dict[str, Any] = {}
    for name, (candidate, cfg) in candidates.items():
        train_set = candidate.as_dataset(real)
        accuracies = []
        for i in range(runs):
            model = build_model(model_cfg, real.input_shape, real.num_classes, derive_seed(seed, f"eval-net-{i}")).to(real.x_train.device)
            noise = derive_seed(seed, f"eval-noise-{i}")
            train(model, train_set, cfg, augmenter, data_seed=noise, augment_seed=noise, stage=f"{stage}/{name}[{i}]", callback=callback)
            accuracies.append(evaluate(model, real.x_test, real.y_test, cfg.eval_batch_size).accuracy * 100)
        out[name] = {"mean": float(np.mean(accuracies)), "std": float(np.std(accuracies)), "accuracies": accuracies}
    out["protocol"] = {
        "runs": runs,
        "seed": seed,
        "train": recipe(train_cfg, s.lr).model_dump(mode="json"),
        "augmentation": repr(augmenter),
        "examples": sum(class_counts(s)),
    }
    return out
