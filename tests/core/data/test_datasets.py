"""Tests of lmc_core.data.dataset: built-in datasets, the registry, class-balanced subsets and normalisation."""

from __future__ import annotations

import json
import random
import sys
import types

import numpy as np
import pytest
import torch

from lmc_core.data.dataset import Dataset, balanced_subset_indices, load_dataset
from lmc_core.data.generators import mnist1d_arrays
from lmc_core.data.registry import DATASETS, available_datasets, register_dataset
from lmc_core.foundations.config import DataConfig
from tests.helpers.datafiles import write_npz, write_npz_dataset

# The first values of the paper's MNIST-1D (mnist1d defaults, seed 42): pins the generator itself,
# so "deterministic" means the same data in every process, not just a cache returning itself.
MNIST1D_X0 = [-0.33200567, -0.47191037, -0.77869708, -1.00974083, -0.88235257]
MNIST1D_Y10 = [2, 6, 4, 5, 6, 6, 6, 0, 3, 1]


def load(name: str, **kw) -> Dataset:
    return load_dataset(DataConfig(name=name, **kw))


# ---------------------------------------------------------------------------------------------
# Registry


def test_registry_lists_all_builtins():
    assert set(available_datasets()) >= {"mnist1d", "digits", "teacher", "cifar10", "cifar100", "mnist", "fashion_mnist", "npz"}
    assert available_datasets() == sorted(available_datasets())


def test_unknown_dataset_names_the_available_ones():
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'") as err:
        load("imagenet")
    assert "digits" in str(err.value) and "mnist1d" in str(err.value) and "cifar10" in str(err.value)


def test_register_custom_dataset_and_label_check(monkeypatch):
    monkeypatch.setattr(DATASETS, "_loaded", dict(DATASETS._loaded))
    x = torch.arange(12, dtype=torch.float32).reshape(6, 2)

    @register_dataset("tiny")
    def tiny(cfg: DataConfig) -> Dataset:
        return Dataset("whatever", x, torch.tensor([0, 1, 2, 0, 1, 2]), x, torch.tensor([0, 1, 2, 0, 1, 3]), 3, "vector")

    assert "tiny" in available_datasets()
    with pytest.raises(ValueError, match=r"y_test has labels in \[0, 3\], outside 0\.\.2"):
        load("tiny")

    def other(cfg: DataConfig) -> Dataset:
        raise AssertionError

    with pytest.raises(ValueError, match="already registered"):
        register_dataset("tiny")(other)


def test_dataset_validates_shapes_and_dtypes():
    x, y = torch.zeros(4, 3), torch.zeros(4, dtype=torch.int64)
    with pytest.raises(ValueError, match="float32"):
        Dataset("d", x.double(), y, x, y, 2, "vector")
    with pytest.raises(ValueError, match="rank 3"):
        Dataset("d", x, y, x, y, 2, "signal")
    with pytest.raises(ValueError, match="int64"):
        Dataset("d", x, y.int(), x, y, 2, "vector")
    with pytest.raises(ValueError, match="differ in shape"):
        Dataset("d", x, y, torch.zeros(4, 5), y, 2, "vector")
    ds = Dataset("d", torch.zeros(4, 2, 5), y, torch.zeros(3, 2, 5), y[:3], 2, "signal")
    assert ds.input_shape == (2, 5)
    moved = ds.to("cpu")
    assert isinstance(moved, Dataset) and moved.kind == "signal" and torch.equal(moved.x_test, ds.x_test)


# ---------------------------------------------------------------------------------------------
# MNIST-1D


@pytest.fixture
def fresh_mnist1d(tmp_path, monkeypatch):
    """An empty cache dir, an empty in-process cache, and a stand-in for mnist1d's generator.

    The stand-in behaves like the real make_dataset where it matters here (reseeds the global RNGs,
    returns the arrays) but takes no time; the real data is checked by test_mnist1d_shapes_and_values.
    """
    monkeypatch.setenv("LMC_LAB_CACHE_DIR", str(tmp_path))
    calls = []
    rng = np.random.default_rng(0)
    fake = {
        "x": rng.standard_normal((4000, 40)),
        "y": rng.integers(0, 10, 4000),
        "x_test": rng.standard_normal((1000, 40)),
        "y_test": rng.integers(0, 10, 1000),
    }

    def make_dataset(args):
        calls.append(args)
        np.random.seed(42)
        random.seed(42)
        return {**fake, "t": np.zeros(40), "templates": None}

    module = types.ModuleType("mnist1d.data")
    module.make_dataset = make_dataset
    module.get_dataset_args = lambda: "default-args"
    monkeypatch.setitem(sys.modules, "mnist1d.data", module)
    mnist1d_arrays.cache_clear()
    yield {"cache": tmp_path, "calls": calls, "arrays": fake}
    mnist1d_arrays.cache_clear()


def test_mnist1d_shapes_and_values():
    # The real generator (or the user's disk cache of it, which these pinned values also validate).
    ds = load("mnist1d", normalize=False)
    assert ds.kind == "signal" and ds.num_classes == 10 and ds.name == "mnist1d"
    assert ds.x_train.shape == (4000, 1, 40) and ds.x_test.shape == (1000, 1, 40)
    assert ds.y_train.shape == (4000,) and ds.y_test.shape == (1000,)
    assert ds.x_train.dtype == torch.float32 and ds.y_train.dtype == torch.int64
    assert ds.x_train[0, 0, :5].tolist() == pytest.approx(MNIST1D_X0, abs=1e-6)
    assert ds.y_train[:10].tolist() == MNIST1D_Y10
    assert sorted(set(ds.y_test.tolist())) == list(range(10))
    assert ds.mean is None and ds.std is None
    # loads are independent copies of the in-process cache
    ds.x_train.add_(100.0)
    again = load("mnist1d", normalize=False)
    assert again.x_train[0, 0, :5].tolist() == pytest.approx(MNIST1D_X0, abs=1e-6)
    assert torch.equal(again.y_test, ds.y_test)


def test_mnist1d_generation_uses_defaults_and_leaves_global_rngs_alone(fresh_mnist1d):
    np.random.seed(123)
    random.seed(123)
    ds = load("mnist1d", normalize=False)
    after = (np.random.random(), random.random())
    np.random.seed(123)
    random.seed(123)
    # mnist1d reseeds `random` and `np.random` to 42 internally; loading must not leak that.
    assert after == (np.random.random(), random.random())
    assert fresh_mnist1d["calls"] == ["default-args"]
    assert torch.equal(ds.x_train[:, 0], torch.from_numpy(fresh_mnist1d["arrays"]["x"]).float())
    assert torch.equal(ds.y_test, torch.from_numpy(fresh_mnist1d["arrays"]["y_test"]))


def test_mnist1d_disk_cache_round_trip(fresh_mnist1d):
    first = load("mnist1d", normalize=False)
    files = list(fresh_mnist1d["cache"].glob("mnist1d-*.npz"))
    assert len(files) == 1 and not list(fresh_mnist1d["cache"].glob("*.tmp"))
    mnist1d_arrays.cache_clear()
    again = load("mnist1d", normalize=False)
    assert len(fresh_mnist1d["calls"]) == 1  # read back from disk, not regenerated
    for name in ("x_train", "y_train", "x_test", "y_test"):
        assert torch.equal(getattr(again, name), getattr(first, name))
    load("mnist1d")
    assert len(fresh_mnist1d["calls"]) == 1  # and then from memory


def test_mnist1d_corrupt_cache_is_regenerated(fresh_mnist1d):
    load("mnist1d")
    (path,) = fresh_mnist1d["cache"].glob("mnist1d-*.npz")
    path.write_bytes(b"garbage")
    mnist1d_arrays.cache_clear()
    ds = load("mnist1d", normalize=False)
    assert len(fresh_mnist1d["calls"]) == 2
    assert torch.equal(ds.y_train, torch.from_numpy(fresh_mnist1d["arrays"]["y"]))
    with np.load(path, allow_pickle=False) as f:  # rewritten with the regenerated arrays
        assert np.array_equal(f["y"], fresh_mnist1d["arrays"]["y"])


def test_mnist1d_unwritable_cache_is_not_fatal(fresh_mnist1d, monkeypatch):
    blocker = fresh_mnist1d["cache"] / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("LMC_LAB_CACHE_DIR", str(blocker / "cache"))
    assert load("mnist1d").x_train.shape == (4000, 1, 40)


# ---------------------------------------------------------------------------------------------
# digits and teacher


def test_digits_split():
    ds = load("digits", normalize=False)
    assert ds.kind == "image" and ds.num_classes == 10
    assert ds.x_train.shape == (1347, 1, 8, 8) and ds.x_test.shape == (450, 1, 8, 8)
    assert ds.x_train.min().item() == 0.0 and ds.x_train.max().item() == 1.0  # pixels 0..16 / 16
    train_counts = torch.bincount(ds.y_train, minlength=10)
    test_counts = torch.bincount(ds.y_test, minlength=10)
    total = train_counts + test_counts
    assert total.tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
    # stratified: every class is split 3:1 up to rounding
    assert ((test_counts.double() - 0.25 * total).abs() <= 1).all()
    again = load("digits", normalize=False)
    assert torch.equal(again.x_test, ds.x_test) and torch.equal(again.y_train, ds.y_train)


def test_teacher_deterministic_per_seed_and_balanced():
    a, b, c = load("teacher", seed=3), load("teacher", seed=3), load("teacher", seed=4)
    assert a.kind == "vector" and a.num_classes == 4
    assert a.x_train.shape == (2000, 20) and a.x_test.shape == (500, 20)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    assert not torch.equal(a.x_train, c.x_train)
    assert (a.y_train != c.y_train).float().mean() > 0.3
    for ds in (a, c, load("teacher", seed=-1)):
        for y in (ds.y_train, ds.y_test):
            assert (torch.bincount(y, minlength=4).double() / len(y)).min() > 0.15


def test_teacher_labels_are_learnable():
    from sklearn.linear_model import LogisticRegression

    ds = load("teacher", seed=0)
    model = LogisticRegression(max_iter=500).fit(ds.x_train.numpy(), ds.y_train.numpy())
    assert model.score(ds.x_test.numpy(), ds.y_test.numpy()) > 0.7  # chance is 0.25


# ---------------------------------------------------------------------------------------------
# Normalisation


def test_normalisation_per_channel_uses_train_stats(tmp_path):
    path, arrays = write_npz_dataset(tmp_path / "d.npz", shape=(3, 5, 5))
    ds = load("npz", path=str(path))
    xt = ds.x_train.double()
    assert xt.mean(dim=(0, 2, 3)).abs().max() < 1e-5
    assert (xt.std(dim=(0, 2, 3), unbiased=False) - 1).abs().max() < 1e-5
    train64 = arrays.x_train.astype(np.float64)
    want_mean = train64.mean(axis=(0, 2, 3))
    want_std = train64.std(axis=(0, 2, 3))
    assert np.allclose(ds.mean, want_mean, rtol=1e-9) and np.allclose(ds.std, want_std, rtol=1e-9)
    assert len(set(np.round(ds.mean))) == 3  # the channels really differ (offsets 1, 11, 21)
    # The test split is standardised with the *train* statistics ...
    want_test = (arrays.x_test - want_mean[None, :, None, None]) / want_std[None, :, None, None]
    assert torch.allclose(ds.x_test.double(), torch.from_numpy(want_test), atol=1e-5)
    # ... which is measurably different from standardising it with its own.
    own = (arrays.x_test - arrays.x_test.mean(axis=(0, 2, 3), keepdims=True)) / arrays.x_test.std(axis=(0, 2, 3), keepdims=True)
    assert not np.allclose(ds.x_test.numpy(), own, atol=1e-3)


def test_normalisation_signal_channels(tmp_path):
    path, _ = write_npz_dataset(tmp_path / "s.npz", shape=(2, 9))
    ds = load("npz", path=str(path))
    assert len(ds.mean) == 2 and len(ds.std) == 2
    assert ds.x_train.double().mean(dim=(0, 2)).abs().max() < 1e-5
    assert (ds.x_train.double().std(dim=(0, 2), unbiased=False) - 1).abs().max() < 1e-5


def test_normalisation_vector_is_global():
    raw = load("teacher", normalize=False)
    ds = load("teacher")
    assert len(ds.mean) == 1 and len(ds.std) == 1
    assert abs(ds.x_train.double().mean().item()) < 1e-5
    assert abs(ds.x_train.double().std(unbiased=False).item() - 1) < 1e-5
    # one global pair, not per-feature: per-feature means are not all zero
    assert ds.x_train.double().mean(dim=0).abs().max() > 1e-3
    expected = (raw.x_test.double() - ds.mean[0]) / ds.std[0]
    assert torch.allclose(ds.x_test.double(), expected, atol=1e-5)


def test_normalisation_off_and_constant_channel(tmp_path):
    x = np.random.default_rng(0).standard_normal((8, 2, 4)).astype(np.float32)
    x[:, 1] = 5.0  # a constant channel: std 0 must not produce NaN
    y = np.arange(8) % 2
    path = write_npz(tmp_path / "c.npz", x_train=x, y_train=y, x_test=x, y_test=y)
    off = load("npz", path=str(path), normalize=False)
    assert off.mean is None and torch.equal(off.x_train, torch.from_numpy(x))
    on = load("npz", path=str(path))
    assert torch.isfinite(on.x_train).all() and on.std[1] == 1.0 and (on.x_train[:, 1] == 0).all()


def test_describe_is_json_provenance():
    ds = load("digits", train_size=200, seed=1)
    d = json.loads(json.dumps(ds.describe()))
    assert d["name"] == "digits" and d["kind"] == "image" and d["num_classes"] == 10
    assert d["train_size"] == 200 and d["test_size"] == 450 and d["input_shape"] == [1, 8, 8]
    assert d["mean"] == pytest.approx(list(ds.mean)) and len(d["std"]) == 1


# ---------------------------------------------------------------------------------------------
# Class-balanced subsets


def test_subset_is_balanced_and_reproducible():
    full = load("digits", normalize=False)
    a = load("digits", normalize=False, train_size=100, seed=5)
    assert torch.bincount(a.y_train, minlength=10).tolist() == [10] * 10
    b = load("digits", normalize=False, train_size=100, seed=5)
    c = load("digits", normalize=False, train_size=100, seed=6)
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_train, b.y_train)
    assert not torch.equal(a.x_train, c.x_train)
    assert torch.equal(a.x_test, full.x_test)  # the test split is never subsampled
    idx = torch.from_numpy(balanced_subset_indices(full.y_train.numpy(), 100, 5))
    assert torch.equal(a.x_train, full.x_train[idx]) and torch.equal(a.y_train, full.y_train[idx])
    odd = load("digits", normalize=False, train_size=105, seed=5)
    counts = torch.bincount(odd.y_train, minlength=10)
    assert counts.sum() == 105 and set(counts.tolist()) == {10, 11}


def test_subset_stats_come_from_the_subset():
    ds = load("teacher", train_size=100, seed=2)
    assert len(ds.x_train) == 100
    assert abs(ds.x_train.double().mean().item()) < 1e-5
    assert abs(ds.x_train.double().std(unbiased=False).item() - 1) < 1e-5


def test_subset_exhausts_small_classes():
    y = np.array([0] * 3 + [1] * 50 + [2] * 50)
    idx = balanced_subset_indices(y, 30, seed=0)
    counts = np.bincount(y[idx], minlength=3)
    assert counts[0] == 3 and sorted(counts[1:].tolist()) == [13, 14]
    assert np.all(np.diff(idx) > 0)  # sorted, no repeats
    assert np.array_equal(balanced_subset_indices(y, 30, seed=-7), balanced_subset_indices(y, 30, seed=-7))
    assert len(balanced_subset_indices(y, len(y), seed=0)) == len(y)


def test_subset_too_large():
    with pytest.raises(ValueError, match="train_size 5000 exceeds the 1347"):
        load("digits", train_size=5000)
