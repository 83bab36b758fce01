"""Readers of datasets the user already has on disk: CIFAR-10/100, MNIST / Fashion-MNIST IDX files, .npz and
folders of JPEG/PNG images per class (an ImageNet subset such as ImageNet-10).

Nothing here downloads. Every reader takes `cfg.path`; a missing file raises FileNotFoundError naming
what was expected and where to get it, a malformed one raises ValueError naming the file and the fault.
CIFAR's python batches are pickles, which are read with an unpickler that can only build numpy arrays,
so a tampered file cannot run code.
"""

from __future__ import annotations

import codecs
import gzip
import io
import os
import pickle
import tarfile
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor
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


# ---------------------------------------------------------------------------------------------
# A folder of images per class (torchvision's ImageFolder layout), e.g. the user's ImageNet subset.

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
TEST_FOLDERS = ("val", "test")  # the first one present is the test split
DEFAULT_IMAGE_SIZE = 224
_LAYOUT = "<root>/train/<class>/*.jpg|jpeg|png and <root>/val/<class>/... (or test/)"
_DECODE_THREADS = 8  # Pillow releases the GIL while decoding and resizing; more threads gain little


def _subfolders(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))


def decode_image(path: Path, size: int) -> np.ndarray:
    """Return the image at `path` as uint8 RGB (3, size, size): shorter side resized to `size`, then centre-cropped.

    The resize and crop follow torchvision's Resize(size) + CenterCrop(size) on a Pillow image (bilinear,
    antialiased; the longer side truncated; crop offsets rounded), so the same files give the same pixels.
    """
    from PIL import Image  # imported here: only this reader needs Pillow

    try:
        with Image.open(path) as img:
            img.load()  # decode now, so a truncated file fails here and names itself
            rgb = img.convert("RGB")  # greyscale, palette, CMYK and alpha images all become 3-channel RGB
    except Exception as e:  # noqa: BLE001 - Pillow signals a bad file with many exception types; all mean "unreadable"
        raise ValueError(f"image_folder: cannot read image {path} ({type(e).__name__}: {e}); replace or delete the file") from None
    w, h = rgb.size
    if w <= h:
        new_w, new_h = size, int(size * h / w)
    else:
        new_w, new_h = int(size * w / h), size
    if (new_w, new_h) != (w, h):
        rgb = rgb.resize((new_w, new_h), Image.Resampling.BILINEAR)
    top, left = round((new_h - size) / 2.0), round((new_w - size) / 2.0)
    rgb = rgb.crop((left, top, left + size, top + size))
    pixels: np.ndarray = np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1)
    return pixels


def _class_files(split: Path, classes: list[str], root: Path) -> list[list[Path]]:
    """Return each class's image files in `split`, sorted by name; a missing or empty class folder is an error."""
    missing = [c for c in classes if not (split / c).is_dir()]
    if missing:
        raise FileNotFoundError(
            f"image_folder: {split} lacks class folder(s) {', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''} "
            f"({len(missing)} of {len(classes)}); every class needs a folder of images in {root}/train and in {split}"
        )
    files = [_image_files(split / c) for c in classes]
    empty = [c for c, f in zip(classes, files, strict=True) if not f]
    if empty:
        raise ValueError(
            f"image_folder: class folder(s) {', '.join(str(split / c) for c in empty[:10])} hold no "
            f"{'/'.join(s[1:] for s in IMAGE_SUFFIXES)} images; add images, delete the folder, or leave the class out of data.classes"
        )
    return files


def _read_split(files: list[list[Path]], size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (float32 images (N, 3, size, size) in [0, 1], int64 labels (N,)), label i for files[i]."""
    flat = [(path, label) for label, paths in enumerate(files) for path in paths]
    # Written row by row into one float32 tensor: peak memory is the tensor itself, not a uint8 copy beside it.
    x = torch.empty((len(flat), 3, size, size), dtype=torch.float32)

    def fill(i: int) -> None:
        x[i] = torch.from_numpy(decode_image(flat[i][0], size).astype(np.float32)).div_(255.0)

    with ThreadPoolExecutor(max_workers=min(_DECODE_THREADS, os.cpu_count() or 1)) as pool:
        for _ in pool.map(fill, range(len(flat))):  # consuming the results re-raises a decoding error
            pass
    return x, torch.tensor([label for _, label in flat], dtype=torch.int64)


def read_image_folder(root: Path, size: int = DEFAULT_IMAGE_SIZE, classes: list[str] | None = None, name: str = "image_folder") -> Dataset:
    """Return the images under `root` (train/ and val/ or test/, one folder per class) as (N, 3, size, size) in [0, 1].

    Labels follow `classes` (label i = classes[i]); without it, every class folder of train/, sorted by name.
    The test split is val/ when present, else test/; it must hold a folder for every class used.
    """
    if not root.is_dir():
        raise FileNotFoundError(f"image_folder: folder {root.resolve()} not found; set data.path to the folder holding {_LAYOUT}")
    train = root / "train"
    if not train.is_dir():
        raise FileNotFoundError(f"image_folder: no train/ folder in {root.resolve()}; expected {_LAYOUT}")
    test = next((root / t for t in TEST_FOLDERS if (root / t).is_dir()), None)
    if test is None:
        raise FileNotFoundError(f"image_folder: no val/ or test/ folder in {root.resolve()}; expected {_LAYOUT}")
    found = _subfolders(train)
    if not found:
        raise ValueError(f"image_folder: {train} holds no class folders; expected {_LAYOUT}")
    test_found = _subfolders(test)
    if not test_found:
        raise ValueError(
            f"image_folder: {test} holds no class folders; sort its images into one folder per class, named as in {train} "
            "(ImageNet's validation images come in one flat folder, with their classes listed separately)"
        )
    if classes is None:
        classes = found
        if test_found != found:
            only_train = sorted(set(found) - set(test_found))
            only_test = sorted(set(test_found) - set(found))
            raise ValueError(
                f"image_folder: {train} and {test} hold different class folders (only in train/: {', '.join(only_train) or 'none'}; "
                f"only in {test.name}/: {', '.join(only_test) or 'none'}); make them match, or list the classes to use in data.classes"
            )
    if size < 1:
        raise ValueError(f"image_folder: image size must be positive, got {size}")
    x_train, y_train = _read_split(_class_files(train, classes, root), size)
    x_test, y_test = _read_split(_class_files(test, classes, root), size)
    return Dataset(name, x_train, y_train, x_test, y_test, num_classes=len(classes), kind="image")


def load_image_folder(cfg: DataConfig) -> Dataset:
    """Return the image folder cfg.path (see read_image_folder), resized to cfg.image_size, restricted to cfg.classes."""
    root = _require_path(cfg, "image_folder", f"the folder holding {_LAYOUT}")
    size = cfg.image_size if cfg.image_size is not None else DEFAULT_IMAGE_SIZE
    return read_image_folder(root, size, list(cfg.classes) if cfg.classes is not None else None)
