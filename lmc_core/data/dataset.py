"""Datasets as in-memory tensors: a registry of loaders, a class-balanced training subset and normalisation.

A loader registered with `register_dataset` returns the *raw* dataset (float32 inputs, int64 labels);
`load_dataset` then applies what the DataConfig asks for, in a fixed order: subset first, so that the
normalisation statistics are those of the training examples actually used.
"""

from __future__ import annotations

import functools
import os
import random
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from lmc_core.foundations.config import DataConfig

Kind = Literal["vector", "signal", "image"]
Loader = Callable[[DataConfig], "Dataset"]

# Input rank (with the batch dimension) of each kind of dataset.
_KIND_NDIM: dict[str, int] = {"vector": 2, "signal": 3, "image": 4}

# Independent random streams derived from the one user seed, so that e.g. changing the subset
# never changes the teacher task drawn from the same seed.
_SUBSET_STREAM = 1
_TEACHER_STREAM = 2


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
                raise ValueError(
                    f"dataset {self.name!r}: kind {self.kind!r} needs x_{split} of rank {ndim}, got shape {tuple(x.shape)}"
                )
            if y.dtype != torch.int64 or y.ndim != 1 or len(y) != len(x):
                raise ValueError(
                    f"dataset {self.name!r}: y_{split} must be int64 of shape ({len(x)},), got {y.dtype} {tuple(y.shape)}"
                )
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


_REGISTRY: dict[str, Loader] = {}


def register_dataset(name: str) -> Callable[[Loader], Loader]:
    """Return a decorator that registers a loader `fn(cfg) -> Dataset` (raw, unnormalised) under `name`."""

    def decorate(fn: Loader) -> Loader:
        old = _REGISTRY.get(name)
        # Re-registering the same function (a module reload) is harmless; two different loaders
        # claiming one name is a bug that would otherwise silently pick the last one imported.
        if old is not None and (old.__module__, old.__qualname__) != (fn.__module__, fn.__qualname__):
            raise ValueError(f"dataset {name!r} is already registered by {old.__module__}.{old.__qualname__}")
        _REGISTRY[name] = fn
        return fn

    return decorate


def available_datasets() -> list[str]:
    """Return the registered dataset names, sorted."""
    return sorted(_REGISTRY)


def load_dataset(cfg: DataConfig) -> Dataset:
    """Return the dataset `cfg.name`: loaded, reduced to a class-balanced train subset, then normalised."""
    loader = _REGISTRY.get(cfg.name)
    if loader is None:
        raise ValueError(f"unknown dataset {cfg.name!r}; available datasets: {', '.join(available_datasets())}")
    ds = replace(loader(cfg), name=cfg.name)
    _check_labels(ds)
    if cfg.train_size is not None:
        ds = _subset_train(ds, cfg.train_size, cfg.seed)
    if cfg.normalize:
        ds = _normalize(ds)
    return ds


def _check_labels(ds: Dataset) -> None:
    for split, y in (("train", ds.y_train), ("test", ds.y_test)):
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= ds.num_classes):
            raise ValueError(
                f"dataset {ds.name!r}: y_{split} has labels in [{int(y.min())}, {int(y.max())}], "
                f"outside 0..{ds.num_classes - 1}"
            )
    if len(ds.x_train) == 0:
        raise ValueError(f"dataset {ds.name!r}: the training split is empty")


def _seeded_rng(seed: int, stream: int) -> np.random.Generator:
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
    rng = _seeded_rng(seed, _SUBSET_STREAM)
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
    chunks = x.split(1024)
    total = sum(c.double().sum(dim=dims) for c in chunks)
    mean = total / count
    sq = sum(((c.double() - mean.reshape(shape)) ** 2).sum(dim=dims) for c in chunks)
    std = torch.sqrt(sq / count)
    std = torch.where(std > 0, std, torch.ones_like(std))  # a constant channel is left unscaled
    return tuple(mean.reshape(-1).tolist()), tuple(std.reshape(-1).tolist())


def _normalize(ds: Dataset) -> Dataset:
    mean, std = channel_stats(ds.x_train, ds.kind)
    shape = (1, -1) + (1,) * (ds.x_train.ndim - 2) if ds.kind != "vector" else ()
    m = torch.tensor(mean, dtype=torch.float64).reshape(shape)
    s = torch.tensor(std, dtype=torch.float64).reshape(shape)

    def apply(x: torch.Tensor) -> torch.Tensor:
        return ((x - m.to(x.device, torch.float32)) / s.to(x.device, torch.float32)).contiguous()

    return replace(ds, x_train=apply(ds.x_train), x_test=apply(ds.x_test), mean=mean, std=std)


def _tensor(a: np.ndarray, dtype: np.dtype | type) -> torch.Tensor:
    """Return a torch tensor owning a writable copy of `a` in `dtype`."""
    return torch.from_numpy(np.array(a, dtype=dtype, copy=True))


# ---------------------------------------------------------------------------------------------
# Built-in, offline datasets.

_MNIST1D_SHAPES = {"x": (4000, 40), "y": (4000,), "x_test": (1000, 40), "y_test": (1000,)}


def cache_dir() -> Path:
    """Return LMC Lab's cache folder: $LMC_LAB_CACHE_DIR, else $XDG_CACHE_HOME/lmc_lab, else ~/.cache/lmc_lab."""
    explicit = os.environ.get("LMC_LAB_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "lmc_lab"


def _mnist1d_cache_file() -> Path:
    from importlib.metadata import version

    # Keyed by the package version: the generator (and so the data) belongs to the release.
    return cache_dir() / f"mnist1d-{version('mnist1d')}-default.npz"


def _valid_mnist1d(arrays: dict[str, np.ndarray]) -> bool:
    return all(
        k in arrays and arrays[k].shape == shape and np.isfinite(arrays[k]).all() for k, shape in _MNIST1D_SHAPES.items()
    )


def _generate_mnist1d() -> dict[str, np.ndarray]:
    """Return the paper's MNIST-1D arrays (mnist1d's defaults, its own seed 42), never touching the network."""
    from mnist1d.data import get_dataset_args, make_dataset  # lazy: it imports matplotlib

    # make_dataset reseeds the global `random` and `np.random` generators; put them back so
    # loading data never changes the randomness of anything else in the process.
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        data = make_dataset(get_dataset_args())
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    arrays = {k: np.array(data[k]) for k in _MNIST1D_SHAPES}  # own copies: they are made read-only
    if not _valid_mnist1d(arrays):
        shapes = {k: v.shape for k, v in arrays.items()}
        raise RuntimeError(f"mnist1d generated unexpected shapes {shapes}, expected {_MNIST1D_SHAPES}")
    return arrays


def _read_mnist1d_cache(path: Path) -> dict[str, np.ndarray] | None:
    """Return the cached arrays, or None when the file is absent or not a valid cache."""
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in _MNIST1D_SHAPES}
    except (OSError, KeyError, ValueError):
        return None
    return arrays if _valid_mnist1d(arrays) else None


def _write_mnist1d_cache(path: Path, arrays: dict[str, np.ndarray]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Write then rename, so a concurrent reader never sees a half-written file.
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz.tmp")
        try:
            os.chmod(tmp, 0o644)  # mkstemp makes it private; the cache is as shareable as its folder
            with os.fdopen(fd, "wb") as f:
                np.savez(f, **arrays)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError:
        pass  # the cache is only a speed-up; a read-only home must not stop a run


@functools.lru_cache(maxsize=1)
def mnist1d_arrays() -> dict[str, np.ndarray]:
    """Return the MNIST-1D arrays (x, y, x_test, y_test), read-only, from memory, the disk cache or mnist1d."""
    path = _mnist1d_cache_file()
    arrays = _read_mnist1d_cache(path)
    if arrays is None:
        arrays = _generate_mnist1d()
        _write_mnist1d_cache(path, arrays)
    for a in arrays.values():
        a.setflags(write=False)  # shared by every load in the process
    return arrays


@register_dataset("mnist1d")
def _load_mnist1d(cfg: DataConfig) -> Dataset:
    """Return MNIST-1D (Greydanus 2020): 4000/1000 signals of shape (1, 40), 10 classes."""
    a = mnist1d_arrays()
    return Dataset(
        name="mnist1d",
        x_train=_tensor(a["x"][:, None, :], np.float32),
        y_train=_tensor(a["y"], np.int64),
        x_test=_tensor(a["x_test"][:, None, :], np.float32),
        y_test=_tensor(a["y_test"], np.int64),
        num_classes=10,
        kind="signal",
    )


@register_dataset("digits")
def _load_digits(cfg: DataConfig) -> Dataset:
    """Return scikit-learn's 8x8 digits: a fixed stratified 1347/450 split, pixels scaled to [0, 1]."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x = bunch.images.astype(np.float64) / 16.0
    x_tr, x_te, y_tr, y_te = train_test_split(x, bunch.target, test_size=0.25, stratify=bunch.target, random_state=0)
    return Dataset(
        name="digits",
        x_train=_tensor(x_tr[:, None], np.float32),
        y_train=_tensor(y_tr, np.int64),
        x_test=_tensor(x_te[:, None], np.float32),
        y_test=_tensor(y_te, np.int64),
        num_classes=10,
        kind="image",
    )


TEACHER_SHAPE = {"train": 2000, "test": 500, "features": 20, "hidden": 32, "classes": 4}


@register_dataset("teacher")
def _load_teacher(cfg: DataConfig) -> Dataset:
    """Return a teacher-MLP task drawn from cfg.seed: Gaussian inputs (20,), 4 roughly balanced classes."""
    t = TEACHER_SHAPE
    n_tr, d, h, c = t["train"], t["features"], t["hidden"], t["classes"]
    rng = _seeded_rng(cfg.seed, _TEACHER_STREAM)
    x = rng.standard_normal((n_tr + t["test"], d))
    w1 = rng.standard_normal((d, h)) / np.sqrt(d)
    b1 = 0.5 * rng.standard_normal(h)
    w2 = rng.standard_normal((h, c)) / np.sqrt(h)
    logits = np.tanh(x @ w1 + b1) @ w2
    logits = (logits - logits[:n_tr].mean(0)) / logits[:n_tr].std(0)
    # A random teacher's argmax can starve a class; nudging per-class offsets towards equal train
    # counts keeps every class present without changing the shape of the decision boundaries.
    offset = np.zeros(c)
    for _ in range(30):
        frac = np.bincount((logits[:n_tr] - offset).argmax(1), minlength=c) / n_tr
        offset += 0.5 * np.log(np.maximum(frac, 1e-3) * c)
    y = (logits - offset).argmax(1)
    return Dataset(
        name="teacher",
        x_train=_tensor(x[:n_tr], np.float32),
        y_train=_tensor(y[:n_tr], np.int64),
        x_test=_tensor(x[n_tr:], np.float32),
        y_test=_tensor(y[n_tr:], np.int64),
        num_classes=c,
        kind="vector",
    )


# The file readers register cifar10, cifar100, mnist, fashion_mnist and npz; imported last because
# they build on the registry above.
from lmc_core.data import readers as _readers  # noqa: E402,F401
