"""Datasets as in-memory tensors: a registry of loaders, a class-balanced training subset and normalisation.

A loader in the registry (`lmc_core.data.registry`) returns the *raw* dataset (float32 inputs, int64 labels);
`load_dataset` then applies what the DataConfig asks for, in a fixed order: subset first, so that the
normalisation statistics (unless `normalize_stats` names fixed ones) are those of the training examples actually used.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Literal, cast

import numpy as np
import torch

from lmc_core.data.registry import DATASETS, available_datasets
from lmc_core.foundations.config import DataConfig

Kind = Literal["vector", "signal", "image"]

# Input rank (with the batch dimension) of each kind of dataset.
_KIND_NDIM: dict[str, int] = {"vector": 2, "signal": 3, "image": 4}

# Independent random streams derived from the one user seed, so that e.g. changing the subset
# never changes the teacher task drawn from the same seed.
SUBSET_STREAM = 1
TEACHER_STREAM = 2


@dataclass(frozen=True, eq=False)
class Dataset:
    """A classification dataset held as tensors, with the normalisation that was applied to it."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    kind: Kind
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        # Only cheap metadata checks here: this runs on every `to()`, and label range checks would
        # force a device sync. load_dataset checks label values once.
        if self.kind not in _KIND_NDIM:
            raise ValueError(f"dataset {self.name!r}: kind must be one of {sorted(_KIND_NDIM)}, got {self.kind!r}")
        ndim = _KIND_NDIM[self.kind]
        for split, x, y in (("train", self.x_train, self.y_train), ("test", self.x_test, self.y_test)):
            if x.dtype != torch.float32:
                raise ValueError(f"dataset {self.name!r}: x_{split} must be float32, got {x.dtype}")
            if x.ndim != ndim:
                raise ValueError(f"dataset {self.name!r}: kind {self.kind!r} needs x_{split} of rank {ndim}, got shape {tuple(x.shape)}")
            if y.dtype != torch.int64 or y.ndim != 1 or len(y) != len(x):
                raise ValueError(f"dataset {self.name!r}: y_{split} must be int64 of shape ({len(x)},), got {y.dtype} {tuple(y.shape)}")
        if self.x_test.shape[1:] != self.x_train.shape[1:]:
            raise ValueError(
                f"dataset {self.name!r}: train inputs {tuple(self.x_train.shape[1:])} and test inputs "
                f"{tuple(self.x_test.shape[1:])} differ in shape"
            )
        if self.num_classes < 1:
            raise ValueError(f"dataset {self.name!r}: num_classes must be positive, got {self.num_classes}")

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Return the shape of one input, without the batch dimension."""
        return tuple(self.x_train.shape[1:])

    def to(self, device: torch.device | str) -> Dataset:
        """Return a copy with all four tensors on `device`."""
        return replace(
            self,
            x_train=self.x_train.to(device),
            y_train=self.y_train.to(device),
            x_test=self.x_test.to(device),
            y_test=self.y_test.to(device),
        )

    def describe(self) -> dict[str, Any]:
        """Return JSON-able provenance: name, kind, split sizes, input shape, classes and normalisation."""
        return {
            "name": self.name,
            "kind": self.kind,
            "train_size": len(self.x_train),
            "test_size": len(self.x_test),
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            "mean": None if self.mean is None else list(self.mean),
            "std": None if self.std is None else list(self.std),
        }


def load_dataset(cfg: DataConfig) -> Dataset:
    """Return the dataset `cfg.name`: loaded, reduced to a class-balanced train subset, then normalised."""
    if cfg.name not in DATASETS:
        raise ValueError(f"unknown dataset {cfg.name!r}; available datasets: {', '.join(available_datasets())}")
    loader = DATASETS.get(cfg.name)
    raw: Dataset = loader(cfg)  # DATASETS types its loaders loosely (see data.registry)
    ds = replace(raw, name=cfg.name)
    _check_labels(ds)
    if cfg.train_size is not None:
        ds = _subset_train(ds, cfg.train_size, cfg.seed)
    if cfg.normalize:
        ds = _normalize(ds, cfg.normalize_stats)
    return ds


def _check_labels(ds: Dataset) -> None:
    for split, y in (("train", ds.y_train), ("test", ds.y_test)):
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= ds.num_classes):
            raise ValueError(
                f"dataset {ds.name!r}: y_{split} has labels in [{int(y.min())}, {int(y.max())}], outside 0..{ds.num_classes - 1}"
            )
    if len(ds.x_train) == 0:
        raise ValueError(f"dataset {ds.name!r}: the training split is empty")


def seeded_rng(seed: int, stream: int) -> np.random.Generator:
    """Return a numpy Generator for (seed, stream); any Python int seed, negative ones included."""
    nonneg = 2 * seed if seed >= 0 else -2 * seed - 1  # SeedSequence needs non-negative entropy
    return np.random.default_rng(np.random.SeedSequence([nonneg, stream]))


def balanced_subset_indices(y: np.ndarray, size: int, seed: int) -> np.ndarray:
    """Return `size` sorted indices into `y` whose class counts differ by at most one where classes allow."""
    n = len(y)
    if size > n:
        raise ValueError(f"train_size {size} exceeds the {n} training examples")
    if size == n:
        return np.arange(n)
    rng = seeded_rng(seed, SUBSET_STREAM)
    perm = rng.permutation(n)
    y_perm = y[perm]
    # Rank of each example within its class (in the random order); taking examples by increasing
    # rank takes one of every class before a second of any, so small classes are simply exhausted.
    order = np.argsort(y_perm, kind="stable")
    y_sorted = y_perm[order]
    first = np.searchsorted(y_sorted, y_sorted, side="left")
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n) - first
    classes = int(y.max()) + 1
    class_position = rng.permutation(classes)  # which classes get the remainder is random too
    key = rank * classes + class_position[y_perm]
    chosen = perm[np.argsort(key, kind="stable")[:size]]
    return np.sort(chosen)


def _subset_train(ds: Dataset, size: int, seed: int) -> Dataset:
    try:
        idx = balanced_subset_indices(ds.y_train.cpu().numpy(), size, seed)
    except ValueError as e:
        raise ValueError(f"dataset {ds.name!r}: {e}") from None
    index = torch.from_numpy(idx).to(ds.x_train.device)
    return replace(ds, x_train=ds.x_train[index], y_train=ds.y_train[index])


def channel_stats(x: torch.Tensor, kind: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Return per-channel (mean, std) of `x` (one global pair for "vector"), computed in float64."""
    if kind == "vector":
        dims: tuple[int, ...] = tuple(range(x.ndim))
        shape: tuple[int, ...] = ()
    else:
        dims = (0, *range(2, x.ndim))
        shape = (1, x.shape[1]) + (1,) * (x.ndim - 2)
    count = x.numel() // (1 if kind == "vector" else x.shape[1])
    # Chunked, two-pass: exact enough for 1e-6 targets without a float64 copy of all of CIFAR.
    chunks = torch.split(x, 1024)
    total = cast(torch.Tensor, sum(c.double().sum(dim=dims) for c in chunks))  # a tensor: x has rows
    mean = total / count
    sq = cast(torch.Tensor, sum(((c.double() - mean.reshape(shape)) ** 2).sum(dim=dims) for c in chunks))
    std = torch.sqrt(sq / count)
    std = torch.where(std > 0, std, torch.ones_like(std))  # a constant channel is left unscaled
    return tuple(mean.reshape(-1).tolist()), tuple(std.reshape(-1).tolist())


# The customary ImageNet statistics (torchvision's), which the authors' code uses for ImageNet subsets.
IMAGENET_MEAN: tuple[float, ...] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, ...] = (0.229, 0.224, 0.225)


def _normalize(ds: Dataset, stats: str = "train") -> Dataset:
    if stats == "imagenet":
        if ds.kind != "image" or ds.x_train.shape[1] != 3:
            raise ValueError(
                f"dataset {ds.name!r}: data.normalize_stats='imagenet' needs RGB images (3 channels), got {ds.kind} inputs of "
                f"shape {tuple(ds.input_shape)}; use normalize_stats='train'"
            )
        mean, std = IMAGENET_MEAN, IMAGENET_STD
    elif stats == "train":
        mean, std = channel_stats(ds.x_train, ds.kind)
    else:
        raise ValueError(f"unknown normalize_stats {stats!r}; expected 'train' or 'imagenet'")
    shape = (1, -1) + (1,) * (ds.x_train.ndim - 2) if ds.kind != "vector" else ()
    m = torch.tensor(mean, dtype=torch.float64).reshape(shape)
    s = torch.tensor(std, dtype=torch.float64).reshape(shape)

    def apply(x: torch.Tensor) -> torch.Tensor:
        return ((x - m.to(x.device, torch.float32)) / s.to(x.device, torch.float32)).contiguous()

    return replace(ds, x_train=apply(ds.x_train), x_test=apply(ds.x_test), mean=mean, std=std)


def to_tensor(a: np.ndarray, dtype: np.dtype | type) -> torch.Tensor:
    """Return a torch tensor owning a writable copy of `a` in `dtype`."""
    return torch.from_numpy(np.array(a, dtype=dtype, copy=True))
