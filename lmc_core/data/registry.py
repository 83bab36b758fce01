"""The dataset registry: one line per built-in dataset; importable without torch, so the API validates names.

A loader `fn(cfg: DataConfig) -> Dataset` returns the *raw* dataset (float32 inputs, int64 labels);
`lmc_core.data.dataset.load_dataset` applies the subset and normalisation the config asks for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from lmc_core.foundations.registry import Registry

if TYPE_CHECKING:
    from lmc_core.data.dataset import Dataset
    from lmc_core.foundations.config import DataConfig

Loader = Callable[["DataConfig"], "Dataset"]

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
    },
)

register_dataset = DATASETS.register


def available_datasets() -> list[str]:
    """Return the registered dataset names, sorted."""
    return DATASETS.names()
