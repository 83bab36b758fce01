"""Readers of datasets the user already has on disk: CIFAR-10/100, MNIST / Fashion-MNIST IDX files and .npz.

Nothing here downloads. Every reader takes `cfg.path`; a missing file raises FileNotFoundError naming
what was expected and where to get it, a malformed one raises ValueError naming the file and the fault.
CIFAR's python batches are pickles, which are read with an unpickler that can only build numpy arrays,
so a tampered file cannot run code.
"""

from __future__ import annotations

import codecs
import gzip
import io
import pickle
import tarfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch

from lmc_core.data.dataset import Dataset, Kind
from lmc_core.foundations.config import DataConfig

CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"
_PIXELS = 3 * 32 * 32


def _require_path(cfg: DataConfig, label: str, what: str) -> Path:
    """Return cfg.path as a Path, or raise ValueError asking for it."""
    if not cfg.path:
        raise ValueError(f"{label} is read from local files: set data.path to {what}")
    return Path(cfg.path).expanduser()


def _images_to_tensor(pixels: np.ndarray) -> torch.Tensor:
    """Return uint8 pixels (N, C, H, W) as float32 scaled to [0, 1]."""
    # astype copies: the pixels often live in a read-only buffer (np.frombuffer) torch must not alias
    return torch.from_numpy(pixels.astype(np.float32)).div_(255.0)


def _check_label_range(labels: np.ndarray, num_classes: int, where: str) -> None:
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"{where}: labels must lie in 0..{num_classes - 1}, found {labels.min()}..{labels.max()}")


# ---------------------------------------------------------------------------------------------
# A restricted unpickler: just enough of numpy to rebuild arrays.


def _numpy_globals() -> dict[tuple[str, str], Any]:
    try:  # numpy >= 2
        from numpy._core.multiarray import _reconstruct
        from numpy._core.numeric import _frombuffer  # type: ignore[attr-defined]  # private, absent from numpy's stubs
    except ImportError:  # numpy 1.x
        from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]
        from numpy.core.numeric import _frombuffer  # type: ignore[no-redef]
    # Pickles name these under either numpy.core (numpy 1.x, and CIFAR's own files) or numpy._core
    # (numpy 2); the objects are resolved here rather than by import, so nothing else is reachable.
    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): codecs.encode,  # how protocol <= 2 pickles spell bytes objects
    }
    for core in ("numpy.core", "numpy._core"):
        allowed[(f"{core}.multiarray", "_reconstruct")] = _reconstruct
        allowed[(f"{core}.numeric", "_frombuffer")] = _frombuffer  # protocol 5 arrays
    return allowed


class RefusedGlobal(ValueError):
    """A pickle asked for a global outside the numpy-array allowlist."""


class ArrayUnpickler(pickle.Unpickler):
    """Unpickler (encoding="bytes") that can only rebuild numpy arrays and plain containers."""

    _ALLOWED = _numpy_globals()

    def __init__(self, file: io.BufferedIOBase, source: str):
        super().__init__(file, encoding="bytes")
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._ALLOWED[(module, name)]
        except KeyError:
            raise RefusedGlobal(
                f"{self._source}: refused to unpickle global {module}.{name}; a CIFAR batch holds only numpy arrays, "
                "so this file is corrupt or tampered with"
            ) from None


def load_array_pickle(blob: bytes, source: str) -> Any:
    """Return the object in pickle `blob`, refusing any global but numpy's array machinery."""
    try:
        return ArrayUnpickler(io.BytesIO(blob), source).load()
    except RefusedGlobal:
        raise
    except Exception as e:  # noqa: BLE001 - a damaged pickle can fail in many ways; all of them mean "bad file"
        raise ValueError(f"{source}: not a readable pickle ({type(e).__name__}: {e})") from None


# ---------------------------------------------------------------------------------------------
# CIFAR-10 / CIFAR-100.


@dataclass(frozen=True)
class _CifarLayout:
    label: str
    num_classes: int
    py_dir: str
    py_train: tuple[str, ...]
    py_test: str
    py_label_key: str
    bin_dir: str
    bin_train: tuple[str, ...]
    bin_test: str
    label_bytes: int  # CIFAR-100 binary records carry (coarse, fine); the fine label is last
    archives: tuple[str, ...]

    def files(self, version: str) -> tuple[str, ...]:
        return (*self.py_train, self.py_test) if version == "python" else (*self.bin_train, self.bin_test)

    def folder(self, version: str) -> str:
        return self.py_dir if version == "python" else self.bin_dir

    def not_found(self, path: Path) -> str:
        return (
            f"{self.label}: expected {self.py_dir}/ or {self.bin_dir}/ under {path.resolve()}, or {' or '.join(self.archives)}; "
            f"download it from {CIFAR_URL}"
        )


CIFAR10 = _CifarLayout(
    label="CIFAR-10",
    num_classes=10,
    py_dir="cifar-10-batches-py",
    py_train=tuple(f"data_batch_{i}" for i in range(1, 6)),
    py_test="test_batch",
    py_label_key="labels",
    bin_dir="cifar-10-batches-bin",
    bin_train=tuple(f"data_batch_{i}.bin" for i in range(1, 6)),
    bin_test="test_batch.bin",
    label_bytes=1,
    archives=("cifar-10-python.tar.gz", "cifar-10-binary.tar.gz"),
)
CIFAR100 = _CifarLayout(
    label="CIFAR-100",
    num_classes=100,
    py_dir="cifar-100-python",
    py_train=("train",),
    py_test="test",
    py_label_key="fine_labels",
    bin_dir="cifar-100-binary",
    bin_train=("train.bin",),
    bin_test="test.bin",
    label_bytes=2,
    archives=("cifar-100-python.tar.gz", "cifar-100-binary.tar.gz"),
)


@dataclass(frozen=True)
class _CifarSource:
    """The files of one CIFAR version: a folder on disk, or members already read from an archive."""

    version: str  # "python" or "binary"
    where: str
    folder: Path | None = None
    members: dict[str, bytes] | None = None

    def read(self, name: str, layout: _CifarLayout) -> tuple[str, bytes]:
        """Return (a name for messages, the file's bytes)."""
        if self.members is not None:
            return f"{self.where}:{layout.folder(self.version)}/{name}", self.members[name]
        assert self.folder is not None
        path = self.folder / name
        if not path.is_file():
            raise FileNotFoundError(f"{layout.label}: missing {path}; the full set is {', '.join(layout.files(self.version))}")
        return str(path), path.read_bytes()


def _read_cifar_archive(path: Path, layout: _CifarLayout) -> _CifarSource:
    """Return the CIFAR files inside a .tar(.gz) archive, read in one pass without extracting."""
    found: dict[str, dict[str, bytes]] = {"python": {}, "binary": {}}
    try:
        with tarfile.open(path, "r:*") as tar:
            for member in tar:
                parts = PurePosixPath(member.name).parts
                if not member.isfile() or len(parts) < 2:
                    continue
                for version in found:
                    if parts[-2] == layout.folder(version) and parts[-1] in layout.files(version):
                        handle = tar.extractfile(member)
                        assert handle is not None
                        found[version][parts[-1]] = handle.read()
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        raise ValueError(f"{layout.label}: cannot read archive {path} ({type(e).__name__}: {e})") from None
    for version, members in found.items():
        if members:
            missing = [f for f in layout.files(version) if f not in members]
            if missing:
                raise ValueError(f"{layout.label}: archive {path} lacks {layout.folder(version)}/{', '.join(missing)}")
            return _CifarSource(version=version, where=str(path), members=members)
    raise ValueError(f"{layout.label}: archive {path} holds no {layout.py_dir}/ or {layout.bin_dir}/ folder")


def _locate_cifar(path: Path, layout: _CifarLayout) -> _CifarSource:
    """Return the CIFAR source at `path`: the extracted folder, its parent, or an official archive."""
    if path.is_file():
        return _read_cifar_archive(path, layout)
    if path.is_dir():
        for version in ("python", "binary"):
            if any((path / f).is_file() for f in layout.files(version)):
                return _CifarSource(version=version, where=str(path), folder=path)
        for version in ("python", "binary"):
            folder = path / layout.folder(version)
            if folder.is_dir():
                return _CifarSource(version=version, where=str(folder), folder=folder)
        for archive in layout.archives:
            if (path / archive).is_file():
                return _read_cifar_archive(path / archive, layout)
    raise FileNotFoundError(layout.not_found(path))


def _dict_get(d: dict[Any, Any], key: str, where: str) -> Any:
    # CIFAR's own pickles (Python 2) have bytes keys; a batch re-saved from Python 3 may have str keys.
    for k in (key.encode(), key):
        if k in d:
            return d[k]
    raise ValueError(f"{where}: no {key!r} entry (keys: {sorted(map(repr, d))})")


def parse_cifar_pickle(blob: bytes, where: str, layout: _CifarLayout) -> tuple[np.ndarray, np.ndarray]:
    """Return (uint8 pixels (N, 3072), int64 labels (N,)) from one python-version CIFAR batch."""
    batch = load_array_pickle(blob, where)
    if not isinstance(batch, dict):
        raise ValueError(f"{where}: expected a pickled dict, got {type(batch).__name__}")
    data = _dict_get(batch, "data", where)
    if not isinstance(data, np.ndarray) or data.dtype == object:
        raise ValueError(f"{where}: 'data' must be a numeric array, got {getattr(data, 'dtype', type(data).__name__)}")
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != _PIXELS:
        raise ValueError(f"{where}: 'data' must be uint8 of shape (N, {_PIXELS}), got {data.dtype} {data.shape}")
    raw_labels = _dict_get(batch, layout.py_label_key, where)
    labels = np.asarray(raw_labels) if isinstance(raw_labels, (list, tuple, np.ndarray)) else None
    if labels is None or labels.dtype.kind not in "iu" or labels.shape != (len(data),):
        got = f"{labels.dtype} {labels.shape}" if labels is not None else type(raw_labels).__name__
        raise ValueError(f"{where}: {layout.py_label_key!r} must be {len(data)} integers, got {got}")
    _check_label_range(labels, layout.num_classes, where)
    return data, labels.astype(np.int64)


def parse_cifar_binary(blob: bytes, where: str, layout: _CifarLayout) -> tuple[np.ndarray, np.ndarray]:
    """Return (uint8 pixels (N, 3072), int64 labels (N,)) from one binary-version CIFAR file."""
    record = layout.label_bytes + _PIXELS
    if not blob or len(blob) % record:
        raise ValueError(
            f"{where}: {len(blob)} bytes is not a whole number of {record}-byte {layout.label} records "
            "(truncated, or not the binary version)"
        )
    rows = np.frombuffer(blob, dtype=np.uint8).reshape(-1, record)
    labels = rows[:, layout.label_bytes - 1].astype(np.int64)
    _check_label_range(labels, layout.num_classes, where)
    return rows[:, layout.label_bytes :], labels


def read_cifar(path: Path, layout: _CifarLayout, name: str) -> Dataset:
    """Return CIFAR-10 or CIFAR-100 from `path` as (N, 3, 32, 32) images in [0, 1]."""
    source = _locate_cifar(path, layout)
    parse = parse_cifar_pickle if source.version == "python" else parse_cifar_binary

    def split(files: tuple[str, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        parts = []
        for f in files:
            where, blob = source.read(f, layout)
            parts.append(parse(blob, where, layout))
        pixels = np.concatenate([p for p, _ in parts]).reshape(-1, 3, 32, 32)
        return _images_to_tensor(pixels), torch.from_numpy(np.concatenate([y for _, y in parts]))

    train_files = layout.py_train if source.version == "python" else layout.bin_train
    test_file = layout.py_test if source.version == "python" else layout.bin_test
    x_train, y_train = split(train_files)
    x_test, y_test = split((test_file,))
    return Dataset(name, x_train, y_train, x_test, y_test, num_classes=layout.num_classes, kind="image")


def load_cifar10(cfg: DataConfig) -> Dataset:
    """Return CIFAR-10 read from cfg.path."""
    return read_cifar(_require_path(cfg, "CIFAR-10", "the CIFAR-10 folder or archive"), CIFAR10, "cifar10")


def load_cifar100(cfg: DataConfig) -> Dataset:
    """Return CIFAR-100 (fine labels) read from cfg.path."""
    return read_cifar(_require_path(cfg, "CIFAR-100", "the CIFAR-100 folder or archive"), CIFAR100, "cifar100")


# ---------------------------------------------------------------------------------------------
# MNIST / Fashion-MNIST IDX files.

IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
_IDX_UBYTE = 0x08


def parse_idx(blob: bytes, where: str, ndim: int) -> np.ndarray:
    """Return the uint8 array in an IDX file's bytes (gzip-compressed or not), checking header and size."""
    if blob[:2] == b"\x1f\x8b":  # sniff rather than trust the name: people gunzip and keep names
        try:
            blob = gzip.decompress(blob)
        except (OSError, EOFError, zlib.error) as e:
            raise ValueError(f"{where}: corrupt gzip data ({e})") from None
    if len(blob) < 4 or blob[0] != 0 or blob[1] != 0:
        raise ValueError(f"{where}: bad IDX magic {blob[:4].hex()!r}; an IDX file starts with two zero bytes")
    if blob[2] != _IDX_UBYTE:
        raise ValueError(f"{where}: IDX type code 0x{blob[2]:02x} is not 0x08 (unsigned byte)")
    if blob[3] != ndim:
        raise ValueError(f"{where}: IDX has {blob[3]} dimensions, expected {ndim}")
    header = 4 + 4 * ndim
    if len(blob) < header:
        raise ValueError(f"{where}: truncated IDX header ({len(blob)} bytes)")
    dims = tuple(int(d) for d in np.frombuffer(blob, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(dims))
    if len(blob) - header != expected:
        raise ValueError(f"{where}: IDX header says {dims} = {expected} bytes of data, the file has {len(blob) - header}")
    return np.frombuffer(blob, dtype=np.uint8, offset=header).reshape(dims)


def _locate_idx(path: Path, label: str, url: str, torchvision_name: str) -> dict[str, Path]:
    """Return the four IDX files (raw preferred over .gz) in `path` or its torchvision layout <path>/<Name>/raw."""
    for folder in (path, path / torchvision_name / "raw"):
        files: dict[str, Path] = {}
        for key, base in IDX_FILES.items():
            for candidate in (folder / base, folder / f"{base}.gz"):
                if candidate.is_file():
                    files[key] = candidate
                    break
        if len(files) == len(IDX_FILES):
            return files
        if files:  # a partial set in the folder the user pointed at: name exactly what is missing
            missing = [f"{IDX_FILES[k]}[.gz]" for k in IDX_FILES if k not in files]
            raise FileNotFoundError(f"{label}: {folder} lacks {', '.join(missing)}; download them from {url}")
    expected = ", ".join(f"{b}[.gz]" for b in IDX_FILES.values())
    raise FileNotFoundError(f"{label}: expected {expected} in {path}; download them from {url}")


def read_idx_dataset(path: Path, label: str, name: str, url: str, torchvision_name: str) -> Dataset:
    """Return an MNIST-style IDX dataset from `path` as (N, 1, H, W) images in [0, 1], 10 classes."""
    files = _locate_idx(path, label, url, torchvision_name)
    arrays = {key: parse_idx(f.read_bytes(), str(f), ndim=3 if key.endswith("images") else 1) for key, f in files.items()}
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if len(images) != len(labels):
            raise ValueError(
                f"{label}: {files[f'{split}_images']} has {len(images)} images but {files[f'{split}_labels']} has {len(labels)} labels"
            )
        _check_label_range(labels, 10, str(files[f"{split}_labels"]))
    if arrays["train_images"].shape[1:] != arrays["test_images"].shape[1:]:
        raise ValueError(
            f"{label}: train images are {arrays['train_images'].shape[1:]} but test images are {arrays['test_images'].shape[1:]}"
        )
    return Dataset(
        name=name,
        x_train=_images_to_tensor(arrays["train_images"][:, None]),
        y_train=torch.from_numpy(arrays["train_labels"].astype(np.int64)),
        x_test=_images_to_tensor(arrays["test_images"][:, None]),
        y_test=torch.from_numpy(arrays["test_labels"].astype(np.int64)),
        num_classes=10,
        kind="image",
    )


def load_mnist(cfg: DataConfig) -> Dataset:
    """Return MNIST read from the IDX files in cfg.path."""
    path = _require_path(cfg, "MNIST", "the folder holding its four IDX files")
    return read_idx_dataset(path, "MNIST", "mnist", "http://yann.lecun.com/exdb/mnist/ (or a mirror)", "MNIST")


def load_fashion_mnist(cfg: DataConfig) -> Dataset:
    """Return Fashion-MNIST read from the IDX files in cfg.path."""
    path = _require_path(cfg, "Fashion-MNIST", "the folder holding its four IDX files")
    url = "https://github.com/zalandoresearch/fashion-mnist"
    return read_idx_dataset(path, "Fashion-MNIST", "fashion_mnist", url, "FashionMNIST")


# ---------------------------------------------------------------------------------------------
# Any dataset as one .npz file.

NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
_NPZ_KINDS: dict[int, Kind] = {2: "vector", 3: "signal", 4: "image"}


def read_npz(path: Path, name: str = "npz") -> Dataset:
    """Return the dataset in an .npz with x_train, y_train, x_test, y_test; the kind follows x's rank."""
    if not path.is_file():
        raise FileNotFoundError(f"npz: file {path} not found; expected an .npz holding arrays {', '.join(NPZ_KEYS)}")
    where = str(path)
    try:
        npz = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zlib.error, zipfile.BadZipFile) as e:
        raise ValueError(f"{where}: cannot read as .npz ({type(e).__name__}: {e})") from None
    if isinstance(npz, np.ndarray):  # np.load read a bare .npy array
        raise ValueError(f"{where}: a single .npy array, not an .npz archive of {', '.join(NPZ_KEYS)}")
    with npz:
        missing = [k for k in NPZ_KEYS if k not in npz.files]
        if missing:
            raise ValueError(f"{where}: missing array(s) {', '.join(missing)} (found: {', '.join(npz.files) or 'none'})")
        try:
            a = {k: npz[k] for k in NPZ_KEYS}
        except (ValueError, OSError, EOFError, zlib.error, zipfile.BadZipFile) as e:
            # numpy refuses object arrays here (they would need unpickling), as well as damaged members
            raise ValueError(f"{where}: cannot read its arrays ({type(e).__name__}: {e})") from None

    for split in ("train", "test"):
        x, y = a[f"x_{split}"], a[f"y_{split}"]
        if x.dtype.kind not in "fiub":
            raise ValueError(f"{where}: x_{split} must be numeric, got dtype {x.dtype}")
        if x.ndim not in _NPZ_KINDS:
            raise ValueError(f"{where}: x_{split} must have 2, 3 or 4 dimensions (N, ...), got shape {x.shape}")
        if y.dtype.kind not in "iu" or y.ndim != 1 or len(y) != len(x):
            raise ValueError(f"{where}: y_{split} must be {len(x)} integer labels, got {y.dtype} {y.shape}")
        if y.size and y.min() < 0:
            raise ValueError(f"{where}: y_{split} has negative label {y.min()}; labels must be 0..C-1")
        if not np.isfinite(x).all():
            raise ValueError(f"{where}: x_{split} contains NaN or infinite values")
    if a["x_train"].shape[1:] != a["x_test"].shape[1:]:
        raise ValueError(f"{where}: x_train samples {a['x_train'].shape[1:]} and x_test samples {a['x_test'].shape[1:]} differ")
    if len(a["y_train"]) == 0:
        raise ValueError(f"{where}: x_train is empty")
    num_classes = int(max(a["y_train"].max(), a["y_test"].max() if a["y_test"].size else 0)) + 1
    return Dataset(
        name=name,
        x_train=torch.from_numpy(a["x_train"].astype(np.float32)),
        y_train=torch.from_numpy(a["y_train"].astype(np.int64)),
        x_test=torch.from_numpy(a["x_test"].astype(np.float32)),
        y_test=torch.from_numpy(a["y_test"].astype(np.int64)),
        num_classes=num_classes,
        kind=_NPZ_KINDS[a["x_train"].ndim],
    )


def load_npz(cfg: DataConfig) -> Dataset:
    """Return the dataset in the .npz file cfg.path."""
    return read_npz(_require_path(cfg, "npz", "an .npz file with x_train, y_train, x_test, y_test"))
