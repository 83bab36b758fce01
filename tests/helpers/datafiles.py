"""Writers of tiny dataset files in each supported on-disk format, with contents the tests know.

Every writer returns the arrays it wrote (uint8 pixels as the format stores them, int64 labels), so a
test can compare a reader's output against them exactly. Contents are drawn from a fixed seed.
"""

from __future__ import annotations

import gzip
import io
import os
import pickle
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

PIXELS = 3 * 32 * 32


@dataclass(frozen=True)
class SplitArrays:
    """What a writer put on disk: pixels exactly as stored, and the labels."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


# ---------------------------------------------------------------------------------------------
# CIFAR


def cifar_contents(num_classes: int = 10, n_per_batch: int = 4, n_test: int = 5, seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Return {file stem: (uint8 pixels (n, 3072), int64 labels (n,))} for a scaled-down CIFAR.

    CIFAR-10 has stems data_batch_1..5 and test_batch; CIFAR-100 has train (5 * n_per_batch rows) and test.
    """
    rng = np.random.default_rng(seed)

    def batch(n: int) -> tuple[np.ndarray, np.ndarray]:
        return rng.integers(0, 256, (n, PIXELS), dtype=np.uint8), rng.integers(0, num_classes, n).astype(np.int64)

    if num_classes == 10:
        out = {f"data_batch_{i}": batch(n_per_batch) for i in range(1, 6)}
        out["test_batch"] = batch(n_test)
    else:
        out = {"train": batch(5 * n_per_batch), "test": batch(n_test)}
    return out


def cifar_expected(contents: dict[str, tuple[np.ndarray, np.ndarray]]) -> SplitArrays:
    """Return the train/test arrays a reader should produce from `contents` (pixels as (N, 3, 32, 32) uint8)."""
    test_key = "test_batch" if "test_batch" in contents else "test"
    train = [v for k, v in contents.items() if k != test_key]
    return SplitArrays(
        x_train=np.concatenate([x for x, _ in train]).reshape(-1, 3, 32, 32),
        y_train=np.concatenate([y for _, y in train]),
        x_test=contents[test_key][0].reshape(-1, 3, 32, 32),
        y_test=contents[test_key][1],
    )


def cifar_pickle_bytes(pixels: np.ndarray, labels: np.ndarray, num_classes: int, protocol: int = 2) -> bytes:
    """Return a python-version CIFAR batch: a pickled dict with bytes keys, like the official files."""
    if num_classes == 10:
        d = {b"batch_label": b"testing batch", b"labels": [int(v) for v in labels], b"data": pixels}
    else:
        d = {
            b"batch_label": b"testing batch",
            b"fine_labels": [int(v) for v in labels],
            b"coarse_labels": [int(v) // 5 for v in labels],
            b"data": pixels,
        }
    d[b"filenames"] = [f"img_{i}.png".encode() for i in range(len(labels))]
    return pickle.dumps(d, protocol=protocol)


def cifar_binary_bytes(pixels: np.ndarray, labels: np.ndarray, num_classes: int) -> bytes:
    """Return binary-version CIFAR records: label byte(s) then 3072 pixel bytes each."""
    label_cols = [labels[:, None]] if num_classes == 10 else [labels[:, None] // 5, labels[:, None]]
    return np.concatenate([*(c.astype(np.uint8) for c in label_cols), pixels], axis=1).tobytes()


def cifar_folder_name(num_classes: int, version: str) -> str:
    """Return the official extracted folder name for CIFAR-10/100 in the 'python' or 'binary' version."""
    if num_classes == 10:
        return "cifar-10-batches-py" if version == "python" else "cifar-10-batches-bin"
    return "cifar-100-python" if version == "python" else "cifar-100-binary"


def cifar_archive_name(num_classes: int, version: str) -> str:
    """Return the official archive file name for CIFAR-10/100 in the 'python' or 'binary' version."""
    return f"cifar-{num_classes}-{version}.tar.gz"


def cifar_files(
    num_classes: int, version: str, contents: dict[str, tuple[np.ndarray, np.ndarray]], protocol: int | str = 2
) -> dict[str, bytes]:
    """Return {file name: bytes} of a CIFAR folder in the given version; protocol "py2" mimics the official pickles."""
    files = {}
    for stem, (pixels, labels) in contents.items():
        if version == "python" and protocol == "py2":
            files[stem] = py2_cifar_pickle_bytes(pixels, labels, num_classes)
        elif version == "python":
            assert isinstance(protocol, int), f"protocol is a pickle protocol number or 'py2', got {protocol!r}"
            files[stem] = cifar_pickle_bytes(pixels, labels, num_classes, protocol)
        else:
            files[f"{stem}.bin"] = cifar_binary_bytes(pixels, labels, num_classes)
    return files


def write_cifar_folder(
    root: Path, num_classes: int = 10, version: str = "python", protocol: int | str = 2, **kw: int
) -> tuple[Path, SplitArrays]:
    """Write an extracted CIFAR folder under `root`; return (the folder, expected arrays)."""
    contents = cifar_contents(num_classes, **kw)
    folder = Path(root) / cifar_folder_name(num_classes, version)
    folder.mkdir(parents=True, exist_ok=True)
    for name, blob in cifar_files(num_classes, version, contents, protocol).items():
        (folder / name).write_bytes(blob)
    return folder, cifar_expected(contents)


def write_tar_gz(path: Path, members: dict[str, bytes]) -> Path:
    """Write a .tar.gz holding `members` ({posix path: bytes}) and return its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for name, blob in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return path


def write_cifar_archive(
    root: Path, num_classes: int = 10, version: str = "python", protocol: int | str = 2, **kw: int
) -> tuple[Path, SplitArrays]:
    """Write an official-layout CIFAR .tar.gz under `root`; return (the archive, expected arrays)."""
    contents = cifar_contents(num_classes, **kw)
    folder = cifar_folder_name(num_classes, version)
    members = {f"{folder}/{name}": blob for name, blob in cifar_files(num_classes, version, contents, protocol).items()}
    members[f"{folder}/readme.html"] = b"<html>not a batch</html>"  # the real archives carry extras
    path = write_tar_gz(Path(root) / cifar_archive_name(num_classes, version), members)
    return path, cifar_expected(contents)


class _MarkerWriter:
    """Pickles as a call that creates `marker`: proof of whether an unpickler executed it."""

    def __init__(self, marker: Path, via: str):
        self.marker, self.via = str(marker), via

    def __reduce__(self) -> tuple:
        if self.via == "os.system":
            return (os.system, (f"touch '{self.marker}'",))
        return (open, (self.marker, "w"))


def malicious_cifar_pickle(marker: Path, via: str = "os.system") -> bytes:
    """Return a CIFAR-looking pickle whose 'data' entry, if unpickled normally, creates the file `marker`."""
    d = {b"labels": [0], b"data": _MarkerWriter(marker, via)}
    return pickle.dumps(d, protocol=2)


# ---------------------------------------------------------------------------------------------
# IDX (MNIST / Fashion-MNIST)

IDX_NAMES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def idx_bytes(array: np.ndarray, type_code: int = 0x08) -> bytes:
    """Return `array` (uint8) in IDX format: 0, 0, type code, rank, big-endian dims, then the data."""
    header = bytes([0, 0, type_code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def mnist_contents(n_train: int = 6, n_test: int = 4, size: int = 28, seed: int = 0) -> SplitArrays:
    """Return known MNIST-style arrays: uint8 images (N, size, size) and labels 0..9."""
    rng = np.random.default_rng(seed)
    return SplitArrays(
        x_train=rng.integers(0, 256, (n_train, size, size), dtype=np.uint8),
        y_train=rng.integers(0, 10, n_train).astype(np.int64),
        x_test=rng.integers(0, 256, (n_test, size, size), dtype=np.uint8),
        y_test=rng.integers(0, 10, n_test).astype(np.int64),
    )


def write_idx_folder(folder: Path, gz: bool = False, **kw: int) -> tuple[Path, SplitArrays]:
    """Write the four MNIST IDX files (gzip-compressed with .gz names if `gz`); return (folder, contents)."""
    arrays = mnist_contents(**kw)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    data = {
        "train_images": arrays.x_train,
        "train_labels": arrays.y_train.astype(np.uint8),
        "test_images": arrays.x_test,
        "test_labels": arrays.y_test.astype(np.uint8),
    }
    for key, array in data.items():
        blob = idx_bytes(array)
        name = IDX_NAMES[key]
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(blob))
        else:
            (folder / name).write_bytes(blob)
    return folder, arrays


# ---------------------------------------------------------------------------------------------
# npz


def write_npz(path: Path, **arrays: np.ndarray) -> Path:
    """Write `arrays` to an .npz at `path` and return it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    members: dict[str, Any] = arrays  # Any: numpy's stubs would match **members against savez's allow_pickle
    np.savez(path, **members)
    return path


def npz_contents(
    shape: tuple[int, ...] = (3, 5, 5), n_train: int = 40, n_test: int = 12, num_classes: int = 4, seed: int = 0
) -> SplitArrays:
    """Return float32 inputs of per-sample `shape` with channel c offset by 10 * c, and labels 0..C-1 (all present)."""
    rng = np.random.default_rng(seed)

    def x(n: int) -> np.ndarray:
        base = rng.standard_normal((n, *shape)).astype(np.float32)
        if len(shape) > 1:  # distinct channel statistics, so per-channel normalisation is visible
            offsets = (10.0 * np.arange(shape[0]) + 1.0).reshape(1, -1, *([1] * (len(shape) - 1)))
            base = base * (1.0 + np.arange(shape[0]).reshape(offsets.shape)) + offsets
        return base.astype(np.float32)

    return SplitArrays(
        x_train=x(n_train),
        y_train=np.arange(n_train, dtype=np.int64) % num_classes,
        x_test=x(n_test),
        y_test=np.arange(n_test, dtype=np.int64) % num_classes,
    )


def write_npz_dataset(path: Path, **kw) -> tuple[Path, SplitArrays]:
    """Write an npz dataset with known contents (see npz_contents); return (path, contents)."""
    arrays = npz_contents(**kw)
    return write_npz(path, **vars(arrays)), arrays


# ---------------------------------------------------------------------------------------------
# Python-2 style pickles, as in the official CIFAR "python version" files


def _py2_pickle_ops(value: object) -> bytes:
    """Return protocol-2 opcodes for `value` as Python 2's cPickle wrote them (bytes are py2 `str`)."""
    if value is None:
        return b"N"
    if isinstance(value, bool):
        return b"\x88" if value else b"\x89"
    if isinstance(value, int):
        if 0 <= value < 256:
            return b"K" + bytes([value])
        return b"J" + int(value).to_bytes(4, "little", signed=True)
    if isinstance(value, bytes):
        if len(value) < 256:
            return b"U" + bytes([len(value)]) + value
        return b"T" + len(value).to_bytes(4, "little") + value
    if isinstance(value, tuple):
        return b"(" + b"".join(_py2_pickle_ops(v) for v in value) + b"t"
    if isinstance(value, list):
        return b"](" + b"".join(_py2_pickle_ops(v) for v in value) + b"e"
    if isinstance(value, dict):
        return b"}(" + b"".join(_py2_pickle_ops(k) + _py2_pickle_ops(v) for k, v in value.items()) + b"u"
    if isinstance(value, np.ndarray):
        # numpy 1.x on Python 2: _reconstruct(ndarray, (0,), 'b'), then __setstate__ with
        # (version, shape, dtype, fortran, raw bytes); the dtype is dtype('u1', 0, 1) + its own state.
        assert value.dtype.itemsize == 1, "only single-byte dtypes (byte order '|') are written"
        dtype = b"cnumpy\ndtype\n" + _py2_pickle_ops((value.dtype.str[1:].encode(), 0, 1)) + b"R"
        dtype += _py2_pickle_ops((3, b"|", None, None, None, -1, -1, 0)) + b"b"
        raw = _py2_pickle_ops(np.ascontiguousarray(value).tobytes())
        state = b"(" + _py2_pickle_ops(1) + _py2_pickle_ops(tuple(value.shape)) + dtype + b"\x89" + raw + b"t"
        args = b"(cnumpy\nndarray\n" + _py2_pickle_ops((0,)) + _py2_pickle_ops(b"b") + b"t"
        return b"cnumpy.core.multiarray\n_reconstruct\n" + args + b"R" + state + b"b"
    raise TypeError(f"no py2 pickle form for {type(value).__name__}")


def py2_cifar_pickle_bytes(pixels: np.ndarray, labels: np.ndarray, num_classes: int) -> bytes:
    """Return a CIFAR batch pickled the way the official (Python 2) files are: numpy.core globals, py2 strings."""
    key = b"labels" if num_classes == 10 else b"fine_labels"
    d = {b"batch_label": b"training batch 1 of 5", key: [int(v) for v in labels], b"data": pixels}
    if num_classes == 100:
        d[b"coarse_labels"] = [int(v) // 5 for v in labels]
    return b"\x80\x02" + _py2_pickle_ops(d) + b"."
