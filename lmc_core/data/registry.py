"""The dataset registry: one line per built-in dataset; importable without torch, so the API validates names.

A loader `fn(cfg: DataConfig) -> Dataset` returns the *raw* dataset (float32 inputs, int64 labels);
`lmc_core.data.dataset.load_dataset` applies the subset and normalisation the config asks for.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lmc_core.foundations.config import DataConfig
from lmc_core.foundations.registry import Registry

# Returns a raw lmc_core.data.dataset.Dataset; typed loosely because dataset.py dispatches through
# this registry, and naming Dataset here would make the two modules import each other.
Loader = Callable[[DataConfig], Any]

DATASETS: Registry[Loader] = Registry(
    "dataset",
    {
        "mnist1d": "lmc_core.data.generators:load_mnist1d",
        "digits": "lmc_core.data.generators:load_digits",
        "teacher": "lmc_core.data.generators:load_teacher",
        "cifar10": "lmc_core.data.readers:load_cifar10",
        "cifar100": "lmc_core.data.readers:load_cifar100",
        "mnist": "lmc_core.data.readers:load_mnist",
        "fashion_mnist": "lmc_core.data.readers:load_fashion_mnist",
        "npz": "lmc_core.data.readers:load_npz",
        "image_folder": "lmc_core.data.readers:load_image_folder",
    },
)

register_dataset = DATASETS.register


def available_datasets() -> list[str]:
    """Return the registered dataset names, sorted."""
    return DATASETS.names()
