"""Tests of lmc_core.data.readers on tiny files with known contents: exact round trips and precise errors."""

from __future__ import annotations

import gzip
import pickle
import warnings

import numpy as np
import pytest
import torch

from lmc_core.data.dataset import Dataset, load_dataset
from lmc_core.data.readers import CIFAR10, CIFAR100, parse_cifar_pickle
from lmc_core.foundations.config import DataConfig
from tests.helpers.datafiles import (
    IDX_NAMES,
    SplitArrays,
    cifar_folder_name,
    idx_bytes,
    malicious_cifar_pickle,
    write_cifar_archive,
    write_cifar_folder,
    write_idx_folder,
    write_npz,
    write_npz_dataset,
    write_tar_gz,
)


def raw(name: str, path) -> Dataset:
    """Load without normalisation, so pixels can be compared with what was written."""
    return load_dataset(DataConfig(name=name, path=str(path), normalize=False))


def assert_images_match(ds, expected: SplitArrays, num_classes: int) -> None:
    channels = expected.x_train.shape[1] if expected.x_train.ndim == 4 else 1
    assert ds.kind == "image" and ds.num_classes == num_classes
    assert ds.x_train.dtype == torch.float32 and ds.y_train.dtype == torch.int64
    assert ds.x_train.shape == (len(expected.y_train), channels, *expected.x_train.shape[-2:])
    want_train = torch.from_numpy(expected.x_train.reshape(ds.x_train.shape).astype(np.float32)) / 255
    want_test = torch.from_numpy(expected.x_test.reshape(ds.x_test.shape).astype(np.float32)) / 255
    assert torch.equal(ds.x_train, want_train)
    assert torch.equal(ds.x_test, want_test)
    assert ds.y_train.tolist() == expected.y_train.tolist()
    assert ds.y_test.tolist() == expected.y_test.tolist()


# ---------------------------------------------------------------------------------------------
# CIFAR


@pytest.mark.parametrize("version", ["python", "binary"])
@pytest.mark.parametrize("num_classes", [10, 100])
@pytest.mark.parametrize("where", ["folder", "parent", "archive", "archive_parent"])
def test_cifar_round_trip(tmp_path, version, num_classes, where):
    if where.startswith("archive"):
        path, expected = write_cifar_archive(tmp_path, num_classes, version)
        path = path.parent if where == "archive_parent" else path
    else:
        path, expected = write_cifar_folder(tmp_path, num_classes, version)
        path = path.parent if where == "parent" else path
    ds = raw(f"cifar{num_classes}", path)
    assert ds.x_train.shape == (20, 3, 32, 32) and ds.x_test.shape == (5, 3, 32, 32)
    assert_images_match(ds, expected, num_classes)
    # Spot checks against the bytes as stored: records 3 and 4 sit either side of the first batch
    # boundary (4 records per batch); a record is the R plane, then G, then B, each row-major.
    flat = expected.x_train.reshape(20, -1)
    assert ds.y_train[3].item() == expected.y_train[3] and ds.y_train[4].item() == expected.y_train[4]
    assert ds.x_train[3, 0, 0, 0].item() == np.float32(flat[3, 0]) / np.float32(255)
    assert ds.x_train[4, 1, 0, 0].item() == np.float32(flat[4, 1024]) / np.float32(255)
    assert ds.x_train[4, 2, 31, 30].item() == np.float32(flat[4, 3070]) / np.float32(255)
    assert ds.x_train.min().item() >= 0.0 and ds.x_train.max().item() <= 1.0


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar_python_any_pickle_protocol(tmp_path, protocol):
    path, expected = write_cifar_folder(tmp_path, 10, "python", protocol=protocol)
    assert_images_match(raw("cifar10", path), expected, 10)


@pytest.mark.parametrize("num_classes", [10, 100])
def test_cifar_official_python2_pickles(tmp_path, num_classes):
    # The real files were written by Python 2: numpy.core globals, py2 strings (bytes under encoding="bytes").
    path, expected = write_cifar_archive(tmp_path, num_classes, "python", protocol="py2")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. numpy 2's DeprecationWarning for importing numpy.core
        ds = raw(f"cifar{num_classes}", path)
    assert_images_match(ds, expected, num_classes)


def test_cifar100_uses_fine_labels(tmp_path):
    # The writer stores coarse = fine // 5; fine labels reach beyond 19, coarse labels never do.
    for version in ("python", "binary"):
        path, expected = write_cifar_folder(tmp_path / version, 100, version, n_per_batch=20)
        ds = raw("cifar100", path)
        assert ds.y_train.tolist() == expected.y_train.tolist()
        assert ds.y_train.max().item() >= 20


def test_cifar_missing_path_names_expected_layout(tmp_path):
    where = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError) as err:
        raw("cifar10", where)
    msg = str(err.value)
    assert str(where) in msg and "cifar-10-batches-py" in msg and "cifar-10-batches-bin" in msg
    assert "cifar-10-python.tar.gz" in msg and "cs.toronto.edu" in msg
    with pytest.raises(FileNotFoundError, match="cifar-100-python"):
        raw("cifar100", tmp_path)  # exists, but holds no CIFAR


def test_cifar_missing_batch_names_file(tmp_path):
    folder, _ = write_cifar_folder(tmp_path, 10, "python")
    (folder / "data_batch_4").unlink()
    with pytest.raises(FileNotFoundError, match=str(folder / "data_batch_4")):
        raw("cifar10", folder)


def test_cifar_requires_path():
    with pytest.raises(ValueError, match=r"data\.path"):
        load_dataset(DataConfig(name="cifar10"))


def test_cifar_truncated_binary(tmp_path):
    folder, _ = write_cifar_folder(tmp_path, 10, "binary")
    victim = folder / "data_batch_2.bin"
    victim.write_bytes(victim.read_bytes()[:-100])
    with pytest.raises(ValueError, match="is not a whole number of 3073-byte") as err:
        raw("cifar10", folder)
    assert str(victim) in str(err.value) and "3073" in str(err.value)


def test_cifar_binary_label_out_of_range(tmp_path):
    folder, _ = write_cifar_folder(tmp_path, 10, "binary")
    blob = bytearray((folder / "test_batch.bin").read_bytes())
    blob[3073] = 10  # label byte of record 1
    (folder / "test_batch.bin").write_bytes(bytes(blob))
    with pytest.raises(ValueError, match=r"test_batch\.bin.*0\.\.9"):
        raw("cifar10", folder)


@pytest.mark.parametrize("via", ["os.system", "open"])
def test_cifar_pickle_refuses_globals_without_running_them(tmp_path, via):
    marker = tmp_path / "pwned"
    folder, _ = write_cifar_folder(tmp_path, 10, "python")
    (folder / "data_batch_1").write_bytes(malicious_cifar_pickle(marker, via))
    with pytest.raises(ValueError, match="refused to unpickle global") as err:
        raw("cifar10", folder)
    msg = str(err.value)
    assert str(folder / "data_batch_1") in msg and "refused" in msg
    assert ("system" if via == "os.system" else "open") in msg
    assert not marker.exists()
    # The payload is live: an ordinary unpickler does run it. Without this the test could pass vacuously.
    pickle.loads((folder / "data_batch_1").read_bytes())
    assert marker.exists()


def test_cifar_pickle_refused_inside_archive(tmp_path):
    marker = tmp_path / "pwned"
    folder = cifar_folder_name(10, "python")
    members = {f"{folder}/{name}": malicious_cifar_pickle(marker) for name in ["test_batch"] + [f"data_batch_{i}" for i in range(1, 6)]}
    archive = write_tar_gz(tmp_path / "cifar-10-python.tar.gz", members)
    with pytest.raises(ValueError, match="refused"):
        raw("cifar10", archive)
    assert not marker.exists()


def test_cifar_pickle_rejects_object_and_malformed_arrays():
    labels = np.zeros(2, dtype=np.int64)
    objects = np.array([[1] * 3072, [2] * 3072], dtype=object)
    with pytest.raises(ValueError, match="numeric array"):
        parse_cifar_pickle(pickle.dumps({b"data": objects, b"labels": [0, 0]}), "f", CIFAR10)
    with pytest.raises(ValueError, match="uint8 of shape"):
        parse_cifar_pickle(pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 0]}), "f", CIFAR10)
    with pytest.raises(ValueError, match="fine_labels"):
        parse_cifar_pickle(pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": labels}), "f", CIFAR100)
    with pytest.raises(ValueError, match=r"0\.\.9"):
        parse_cifar_pickle(pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 12]}), "f", CIFAR10)
    with pytest.raises(ValueError, match="not a readable pickle"):
        parse_cifar_pickle(b"\x80\x02garbage", "f", CIFAR10)
    # str keys (a batch re-saved from Python 3) are accepted too
    data, y = parse_cifar_pickle(pickle.dumps({"data": np.full((2, 3072), 7, np.uint8), "labels": [3, 4]}), "f", CIFAR10)
    assert data[1, 5] == 7 and y.tolist() == [3, 4]


def test_cifar_archive_incomplete_or_foreign(tmp_path):
    folder = cifar_folder_name(10, "binary")
    partial = write_tar_gz(tmp_path / "a.tar.gz", {f"{folder}/test_batch.bin": b"\0" * 3073})
    with pytest.raises(ValueError, match=r"data_batch_1\.bin"):
        raw("cifar10", partial)
    foreign = write_tar_gz(tmp_path / "b.tar.gz", {"something/else.txt": b"hi"})
    with pytest.raises(ValueError, match="cifar-10-batches-py"):
        raw("cifar10", foreign)
    not_tar = tmp_path / "c.tar.gz"
    not_tar.write_bytes(b"definitely not an archive")
    with pytest.raises(ValueError, match="cannot read archive"):
        raw("cifar10", not_tar)


# ---------------------------------------------------------------------------------------------
# IDX


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_idx_round_trip(tmp_path, gz, name):
    folder, expected = write_idx_folder(tmp_path, gz=gz)
    ds = raw(name, folder)
    assert ds.x_train.shape == (6, 1, 28, 28) and ds.x_test.shape == (4, 1, 28, 28)
    assert_images_match(ds, expected, 10)
    assert ds.y_train[3].item() == expected.y_train[3]
    assert ds.x_train[3, 0, 27, 1].item() == np.float32(expected.x_train[3, 27, 1]) / np.float32(255)


def test_idx_torchvision_layout(tmp_path):
    _, expected = write_idx_folder(tmp_path / "FashionMNIST" / "raw", gz=True)
    assert_images_match(raw("fashion_mnist", tmp_path), expected, 10)


def test_idx_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        raw("mnist", tmp_path)
    assert str(tmp_path) in str(err.value) and "train-images-idx3-ubyte" in str(err.value)
    folder, _ = write_idx_folder(tmp_path / "m")
    (folder / IDX_NAMES["test_labels"]).unlink()
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte") as err:
        raw("mnist", folder)
    assert "train-images" not in str(err.value)  # only what is missing is named


def test_idx_bad_magic(tmp_path):
    folder, _ = write_idx_folder(tmp_path)
    victim = folder / IDX_NAMES["train_images"]
    victim.write_bytes(b"\x08\x03" + victim.read_bytes()[2:])
    with pytest.raises(ValueError, match="bad IDX magic") as err:
        raw("mnist", folder)
    assert str(victim) in str(err.value)


def test_idx_wrong_type_code_and_rank(tmp_path):
    folder, _ = write_idx_folder(tmp_path)
    (folder / IDX_NAMES["train_labels"]).write_bytes(idx_bytes(np.zeros(6, np.uint8), type_code=0x0D))
    with pytest.raises(ValueError, match="0x0d"):
        raw("mnist", folder)
    (folder / IDX_NAMES["train_labels"]).write_bytes(idx_bytes(np.zeros((6, 1), np.uint8)))
    with pytest.raises(ValueError, match="expected 1"):
        raw("mnist", folder)


def test_idx_size_mismatch(tmp_path):
    folder, _ = write_idx_folder(tmp_path, gz=True)
    victim = folder / f"{IDX_NAMES['test_images']}.gz"
    victim.write_bytes(gzip.compress(gzip.decompress(victim.read_bytes())[:-5]))
    with pytest.raises(ValueError, match="header says") as err:
        raw("mnist", folder)
    assert str(victim) in str(err.value)


def test_idx_image_label_count_mismatch(tmp_path):
    folder, _ = write_idx_folder(tmp_path)
    (folder / IDX_NAMES["train_labels"]).write_bytes(idx_bytes(np.zeros(5, np.uint8)))
    with pytest.raises(ValueError, match=r"6 images but .* 5 labels"):
        raw("mnist", folder)


def test_idx_corrupt_gzip(tmp_path):
    folder, _ = write_idx_folder(tmp_path, gz=True)
    victim = folder / f"{IDX_NAMES['train_labels']}.gz"
    victim.write_bytes(victim.read_bytes()[:12])
    with pytest.raises(ValueError, match="corrupt gzip"):
        raw("mnist", folder)


# ---------------------------------------------------------------------------------------------
# npz


@pytest.mark.parametrize(("shape", "kind"), [((7,), "vector"), ((2, 9), "signal"), ((3, 5, 5), "image")])
def test_npz_round_trip_and_kind(tmp_path, shape, kind):
    path, arrays = write_npz_dataset(tmp_path / "d.npz", shape=shape, num_classes=3)
    ds = raw("npz", path)
    assert ds.kind == kind and ds.num_classes == 3 and ds.name == "npz"
    assert ds.x_train.shape == (40, *shape) and ds.x_test.shape == (12, *shape)
    assert torch.equal(ds.x_train, torch.from_numpy(arrays.x_train))
    assert torch.equal(ds.x_test, torch.from_numpy(arrays.x_test))
    assert ds.y_train.dtype == torch.int64 and ds.y_train.tolist() == arrays.y_train.tolist()
    assert ds.x_train.flatten()[-1].item() == arrays.x_train.flatten()[-1]


def test_npz_num_classes_from_either_split(tmp_path):
    x = np.zeros((4, 2), np.float32)
    path = write_npz(tmp_path / "d.npz", x_train=x, y_train=np.array([0, 1, 1, 0]), x_test=x, y_test=np.array([0, 4, 1, 0], np.uint8))
    assert raw("npz", path).num_classes == 5


def test_npz_errors(tmp_path):
    x = np.zeros((4, 2), np.float32)
    y = np.array([0, 1, 1, 0])
    with pytest.raises(FileNotFoundError, match="x_train"):
        raw("npz", tmp_path / "absent.npz")
    with pytest.raises(ValueError, match=r"missing array.*y_test"):
        raw("npz", write_npz(tmp_path / "a.npz", x_train=x, y_train=y, x_test=x))
    with pytest.raises(ValueError, match="y_train must be 4 integer labels"):
        raw("npz", write_npz(tmp_path / "b.npz", x_train=x, y_train=y.astype(np.float32), x_test=x, y_test=y))
    with pytest.raises(ValueError, match="negative"):
        raw("npz", write_npz(tmp_path / "c.npz", x_train=x, y_train=y - 1, x_test=x, y_test=y))
    with pytest.raises(ValueError, match="2, 3 or 4 dimensions"):
        raw("npz", write_npz(tmp_path / "d.npz", x_train=np.zeros(4), y_train=y, x_test=np.zeros(4), y_test=y))
    with pytest.raises(ValueError, match="differ"):
        raw("npz", write_npz(tmp_path / "e.npz", x_train=x, y_train=y, x_test=np.zeros((4, 3)), y_test=y))
    with pytest.raises(ValueError, match="NaN"):
        raw("npz", write_npz(tmp_path / "f.npz", x_train=x + np.nan, y_train=y, x_test=x, y_test=y))
    with pytest.raises(ValueError, match=r"data\.path"):
        load_dataset(DataConfig(name="npz"))


def test_npz_refuses_object_arrays(tmp_path):
    y = np.array([0, 1])
    x = np.empty((2, 2), dtype=object)
    x[0, 0] = slice(1)  # any object: an object array can only be stored as a pickle
    path = write_npz(tmp_path / "o.npz", x_train=x, y_train=y, x_test=x, y_test=y)
    with pytest.raises(ValueError, match="cannot read its arrays") as err:
        raw("npz", path)
    assert str(path) in str(err.value) and "pickle" in str(err.value).lower()


def test_npz_not_an_archive(tmp_path):
    npy = tmp_path / "x.npy"
    np.save(npy, np.zeros(3))
    with pytest.raises(ValueError, match=r"not an \.npz"):
        raw("npz", npy)
    junk = tmp_path / "j.npz"
    junk.write_bytes(b"PK\x03\x04 truncated zip")
    with pytest.raises(ValueError, match=str(junk)):
        raw("npz", junk)
