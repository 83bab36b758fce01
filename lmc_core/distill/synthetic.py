"""Synthetic (distilled) training sets as first-class results: stored images, labels and provenance.

A `SyntheticSet` uses IDC's multi-formation parameterisation (Kim et al. 2022, "Dataset Condensation
via Efficient Synthetic-Data Parameterization"): each stored image of shape (C, H, W) holds
factor x factor tiles of shape (C, H/f, W/f), and a 1-D signal of shape (C, L) holds f segments of
length L/f. Decoding cuts every stored image into its tiles and upsamples each tile back to the full
size, so the training set a network sees holds f^2 (images) or f (signals) examples per stored one.
With factor 1 decoding is the identity.

Synthetic sets live in the *normalised* input space of the real dataset they were distilled from:
`as_dataset` pairs a decoded set with that dataset's test split and normalisation statistics.

Files: `save` writes images.safetensors (images, labels) and synthetic.json (everything else); both
are written atomically and neither can run code on load. `import_synthetic` reads sets published by
IDC / MTT (.npz, or .pt read with torch's weights-only loader) and refuses pickled objects, sets whose values
plainly belong to the other space (raw vs normalised) than the one declared, and sets marked ZCA-whitened.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import pickle
import platform
import re
import zipfile
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from lmc_core.data.dataset import Dataset
from lmc_core.foundations.seeding import generator
from lmc_core.foundations.storage import load_json, load_tensors, save_json, save_tensors
from lmc_core.foundations.version import __version__

TENSORS_FILE = "images.safetensors"
META_FILE = "synthetic.json"

# Input rank (with the batch dimension) of each kind, and the number of spatial axes a factor splits.
_KIND_NDIM: dict[str, int] = {"vector": 2, "signal": 3, "image": 4}
_SPATIAL_AXES: dict[str, int] = {"vector": 0, "signal": 1, "image": 2}

IMAGE_KEYS = ("images", "x", "data")
LABEL_KEYS = ("labels", "y", "targets")
SPACES = ("normalized", "raw")
_TORCH_SUFFIXES = (".pt", ".pth")


def _versions() -> dict[str, str]:
    return {"lmc_lab": __version__, "torch": torch.__version__, "numpy": np.__version__, "python": platform.python_version()}


def _is_int(value: object) -> bool:
    """True for an int that is not a bool. The checks run whatever the annotations say: values come from JSON and notebooks."""
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    """True for an int or a float that is not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_kind_factor(kind: str, factor: int) -> None:
    if kind not in _KIND_NDIM:
        raise ValueError(f"kind must be one of {sorted(_KIND_NDIM)}, got {kind!r}")
    if not _is_int(factor) or factor < 1:
        raise ValueError(f"factor must be a positive integer, got {factor!r}")
    if kind == "vector" and factor != 1:
        raise ValueError(f"kind 'vector' has no spatial axes to tile: factor must be 1, got {factor}")


def _multiplicity(factor: int, kind: str) -> int:
    """Return how many decoded examples one stored image yields: f^2 (image), f (signal), 1 (vector)."""
    multiplicity: int = factor ** _SPATIAL_AXES[kind]  # a non-negative power: an int
    return multiplicity


def _check_divisible(shape: tuple[int, ...], factor: int, kind: str) -> None:
    spatial = shape[len(shape) - _SPATIAL_AXES[kind] :] if _SPATIAL_AXES[kind] else ()
    bad = [s for s in spatial if s % factor]
    if bad:
        raise ValueError(
            f"{kind} size {tuple(spatial)} is not divisible by factor {factor}: every spatial size must be a "
            f"multiple of the factor (choose a factor that divides {tuple(spatial)})"
        )


def _check_rank(x: torch.Tensor, kind: str, what: str) -> None:
    ndim = _KIND_NDIM[kind]
    if x.ndim != ndim:
        layout = {"vector": "(N, D)", "signal": "(N, C, L)", "image": "(N, C, H, W)"}[kind]
        raise ValueError(f"{what} of kind {kind!r} must be {layout}, got shape {tuple(x.shape)}")


# ---------------------------------------------------------------------------------------------
# Multi-formation: decode (stored -> training examples) and encode (the initialiser's inverse).


def decode(images: torch.Tensor, factor: int, kind: str) -> torch.Tensor:
    """Return the decoded training inputs of stored `images`; differentiable with respect to `images`.

    Images (N, C, H, W): tile (i, j), row-major, of size (H/f, W/f) is upsampled bilinearly
    (align_corners=False) to (H, W) and becomes decoded example n*f*f + i*f + j.
    Signals (N, C, L): segment i of length L/f is upsampled linearly to L and becomes example n*f + i.
    Factor 1 returns `images` itself.
    """
    _check_kind_factor(kind, factor)
    _check_rank(images, kind, "images")
    if factor == 1:
        return images
    _check_divisible(tuple(images.shape), factor, kind)
    if kind == "image":
        n, c, h, w = images.shape
        th, tw = h // factor, w // factor
        # (N, C, f, th, f, tw) -> (N, f_i, f_j, C, th, tw): tiles in row-major order after each image
        tiles = images.reshape(n, c, factor, th, factor, tw).permute(0, 2, 4, 1, 3, 5)
        tiles = tiles.reshape(n * factor * factor, c, th, tw)
        return F.interpolate(tiles, size=(h, w), mode="bilinear", align_corners=False)
    n, c, length = images.shape
    seg = length // factor
    segments = images.reshape(n, c, factor, seg).permute(0, 2, 1, 3).reshape(n * factor, c, seg)
    return F.interpolate(segments, size=length, mode="linear", align_corners=False)


def decode_labels(labels: torch.Tensor, factor: int, kind: str) -> torch.Tensor:
    """Return the labels of the decoded examples: each stored label repeated f*f (image) or f (signal) times."""
    _check_kind_factor(kind, factor)
    return labels.repeat_interleave(_multiplicity(factor, kind))


def encode(x: torch.Tensor, factor: int, kind: str) -> torch.Tensor:
    """Return stored images that pack the full-size examples `x` (decoded order) into tiles.

    `x` holds N*f*f (image) or N*f (signal) examples; each is area-averaged down to its tile size and
    placed in its tile, so decode(encode(x)) approximates x (exactly when each example is constant).
    """
    _check_kind_factor(kind, factor)
    _check_rank(x, kind, "x")
    if factor == 1:
        return x
    _check_divisible(tuple(x.shape), factor, kind)
    m = _multiplicity(factor, kind)
    if x.shape[0] % m:
        raise ValueError(
            f"encode with factor {factor} packs {m} {kind}s into each stored one: got {x.shape[0]} examples, not a multiple of {m}"
        )
    n = x.shape[0] // m
    if kind == "image":
        _, c, h, w = x.shape
        th, tw = h // factor, w // factor
        small = F.adaptive_avg_pool2d(x, (th, tw))
        # (N, f_i, f_j, C, th, tw) -> (N, C, f_i, th, f_j, tw) -> (N, C, H, W)
        return small.reshape(n, factor, factor, c, th, tw).permute(0, 3, 1, 4, 2, 5).reshape(n, c, h, w)
    _, c, length = x.shape
    small = F.adaptive_avg_pool1d(x, length // factor)
    return small.reshape(n, factor, c, length // factor).permute(0, 2, 1, 3).reshape(n, c, length)


# ---------------------------------------------------------------------------------------------
# The set itself.


@dataclass(eq=False)
class SyntheticSet:
    """A synthetic training set: stored images (N, *input_shape), int64 labels, and how it was made."""

    images: torch.Tensor
    labels: torch.Tensor
    num_classes: int
    kind: str
    factor: int = 1
    lr: float | None = None
    provenance: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_kind_factor(self.kind, self.factor)
        if not all(isinstance(t, torch.Tensor) for t in (self.images, self.labels)):
            raise ValueError(f"images and labels must be torch tensors, got {type(self.images).__name__} and {type(self.labels).__name__}")
        if self.images.dtype != torch.float32:
            raise ValueError(f"images must be float32, got {self.images.dtype}: convert with images.float()")
        _check_rank(self.images, self.kind, "images")
        _check_divisible(tuple(self.images.shape), self.factor, self.kind)
        n = self.images.shape[0]
        if self.labels.dtype != torch.int64 or self.labels.ndim != 1 or len(self.labels) != n:
            raise ValueError(
                f"labels must be int64 of shape ({n},) to match the {n} images, got {self.labels.dtype} "
                f"{tuple(self.labels.shape)}: convert with labels.long()"
            )
        if self.labels.device != self.images.device:
            raise ValueError(f"images are on {self.images.device} but labels on {self.labels.device}: move both to one device")
        if not _is_int(self.num_classes) or self.num_classes < 1:
            raise ValueError(f"num_classes must be a positive integer, got {self.num_classes!r}")
        if n and (int(self.labels.min()) < 0 or int(self.labels.max()) >= self.num_classes):
            raise ValueError(
                f"labels lie in [{int(self.labels.min())}, {int(self.labels.max())}], outside 0..{self.num_classes - 1}: "
                f"fix the labels or num_classes"
            )
        if self.lr is not None:
            if not _is_number(self.lr) or not math.isfinite(self.lr) or self.lr <= 0:
                raise ValueError(f"lr must be None or a positive finite number (use float(lr)), got {self.lr!r}")
            self.lr = float(self.lr)
        if not isinstance(self.provenance, dict):
            raise ValueError(f"provenance must be a dict, got {type(self.provenance).__name__}")

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Return the shape of one stored (and so of one decoded) input, without the batch dimension."""
        return tuple(self.images.shape[1:])

    @property
    def decoded_count(self) -> int:
        """Return the number of training examples after decoding."""
        return self.images.shape[0] * _multiplicity(self.factor, self.kind)

    @property
    def images_per_class(self) -> list[int]:
        """Return the number of *stored* images of each class, 0..num_classes-1."""
        return torch.bincount(self.labels.cpu(), minlength=self.num_classes).tolist()

    @property
    def method(self) -> str:
        """Return the provenance's method, or "synthetic" when none is recorded."""
        return str(self.provenance.get("method") or "synthetic")

    def decode(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (x, y) of the decoded training set; x is differentiable with respect to `images`."""
        return decode(self.images, self.factor, self.kind), decode_labels(self.labels, self.factor, self.kind)

    def detach(self) -> SyntheticSet:
        """Return a CPU copy with images detached (no grad) and its own provenance."""
        return replace(
            self,
            images=self.images.detach().to("cpu", copy=True),
            labels=self.labels.detach().to("cpu", copy=True),
            provenance=copy.deepcopy(self.provenance),
        )

    def save(self, folder: str | Path) -> None:
        """Write images.safetensors (images, labels) and synthetic.json (metadata) into `folder`, atomically."""
        folder = Path(folder)
        try:
            json.dumps(self.provenance)
        except (TypeError, ValueError) as e:
            raise ValueError(f"provenance must be JSON-able (str, numbers, lists, dicts) to save it: {e}") from None
        save_tensors(folder / TENSORS_FILE, {"images": self.images, "labels": self.labels})
        meta = {"num_classes": self.num_classes, "kind": self.kind, "factor": self.factor, "lr": self.lr, "provenance": self.provenance}
        save_json(folder / META_FILE, meta)

    @classmethod
    def load(cls, folder: str | Path) -> SyntheticSet:
        """Return the set saved in `folder`; FileNotFoundError or ValueError naming the folder on any fault."""
        folder = Path(folder)
        missing = [name for name in (TENSORS_FILE, META_FILE) if not (folder / name).is_file()]
        if missing:
            raise FileNotFoundError(
                f"synthetic set {folder}: missing {', '.join(missing)}; a saved set holds {TENSORS_FILE} and {META_FILE}"
            )
        try:
            meta = load_json(folder / META_FILE)
        except (ValueError, UnicodeDecodeError) as e:
            raise ValueError(f"synthetic set {folder}: {META_FILE} is not valid JSON ({e})") from None
        keys = ("num_classes", "kind", "factor", "lr", "provenance")
        if not isinstance(meta, dict) or any(k not in meta for k in keys):
            found = sorted(meta) if isinstance(meta, dict) else type(meta).__name__
            raise ValueError(f"synthetic set {folder}: {META_FILE} must hold {', '.join(keys)}; found {found}")
        try:
            tensors = load_tensors(folder / TENSORS_FILE)
        except Exception as e:  # noqa: BLE001 - safetensors raises its own error type for damaged files
            raise ValueError(f"synthetic set {folder}: cannot read {TENSORS_FILE} ({type(e).__name__}: {e})") from None
        if "images" not in tensors or "labels" not in tensors:
            raise ValueError(f"synthetic set {folder}: {TENSORS_FILE} must hold images and labels; found {sorted(tensors)}")
        try:
            return cls(
                images=tensors["images"],
                labels=tensors["labels"],
                num_classes=meta["num_classes"],
                kind=meta["kind"],
                factor=meta["factor"],
                lr=meta["lr"],
                provenance=meta["provenance"],
            )
        except ValueError as e:
            raise ValueError(f"synthetic set {folder}: {e}") from None

    def as_dataset(self, real: Dataset) -> Dataset:
        """Return a Dataset training on the decoded set and testing on `real`'s test split, with `real`'s statistics."""
        if self.kind != real.kind:
            raise ValueError(f"synthetic set is of kind {self.kind!r} but dataset {real.name!r} is {real.kind!r}")
        if self.input_shape != real.input_shape:
            raise ValueError(f"synthetic inputs have shape {self.input_shape} but dataset {real.name!r} expects {real.input_shape}")
        if self.num_classes != real.num_classes:
            raise ValueError(f"synthetic set has {self.num_classes} classes but dataset {real.name!r} has {real.num_classes}")
        with torch.no_grad():
            x, y = self.decode()
        device = real.x_train.device
        return Dataset(
            name=f"synthetic:{self.method}",
            x_train=x.detach().to(device).contiguous(),
            y_train=y.detach().to(device),
            x_test=real.x_test,
            y_test=real.y_test,
            num_classes=real.num_classes,
            kind=real.kind,
            mean=real.mean,
            std=real.std,
        )


# ---------------------------------------------------------------------------------------------
# Initialisers and baselines.


def _class_indices(real: Dataset) -> list[torch.Tensor]:
    y = real.y_train.cpu()
    return [torch.nonzero(y == c).flatten() for c in range(real.num_classes)]


def _draw(pool: torch.Tensor, count: int, g: torch.Generator, c: int, what: str) -> torch.Tensor:
    if count > len(pool):
        raise ValueError(f"class {c} has {len(pool)} training examples but {what} needs {count}")
    return pool[torch.randperm(len(pool), generator=g)[:count]]


def _labels_by_class(counts: list[int]) -> torch.Tensor:
    return torch.repeat_interleave(torch.arange(len(counts), dtype=torch.int64), torch.tensor(counts, dtype=torch.int64))


def _check_ipc(ipc: int) -> None:
    if not _is_int(ipc) or ipc < 1:
        raise ValueError(f"ipc (stored images per class) must be a positive integer, got {ipc!r}")


def init_from_real(real: Dataset, ipc: int, factor: int, seed: int) -> SyntheticSet:
    """Return `ipc` stored images per class, each packing f^k distinct random real examples of its class.

    The examples are drawn with lmc_core.foundations.seeding.generator(seed, "synthetic-init"), class by class; the
    real training indices are recorded, in decoded order, as provenance["indices"].
    """
    _check_ipc(ipc)
    _check_kind_factor(real.kind, factor)
    _check_divisible((1, *real.input_shape), factor, real.kind)
    per_stored = _multiplicity(factor, real.kind)
    g = generator(seed, "synthetic-init")
    chosen = [_draw(pool, ipc * per_stored, g, c, f"ipc {ipc} x {per_stored} per image") for c, pool in enumerate(_class_indices(real))]
    idx = torch.cat(chosen)
    x = real.x_train[idx.to(real.x_train.device)].detach().to("cpu", torch.float32)
    return _initial_set(real, encode(x, factor, real.kind).contiguous(), ipc, factor, seed, "real", indices=idx.tolist())


def _initial_set(real: Dataset, images: torch.Tensor, ipc: int, factor: int, seed: int, init: str, **extra: Any) -> SyntheticSet:
    """Return a starting set of `ipc` stored images per class (labels sorted by class) with its provenance."""
    return SyntheticSet(
        images=images,
        labels=_labels_by_class([ipc] * real.num_classes),
        num_classes=real.num_classes,
        kind=real.kind,
        factor=factor,
        provenance={
            "method": f"init-{init}",
            "init": init,
            "ipc": ipc,
            "factor": factor,
            "seed": seed,
            "source": real.describe(),
            **extra,
            "versions": _versions(),
        },
    )


def init_noise(real: Dataset, ipc: int, factor: int, seed: int) -> SyntheticSet:
    """Return `ipc` stored images per class of standard-normal noise (in the normalised space), seeded."""
    _check_ipc(ipc)
    _check_kind_factor(real.kind, factor)
    g = generator(seed, "synthetic-init-noise")
    images = torch.randn((ipc * real.num_classes, *real.input_shape), generator=g, dtype=torch.float32)
    return _initial_set(real, images, ipc, factor, seed, "noise")


def random_subset(real: Dataset, per_class: list[int], seed: int) -> SyntheticSet:
    """Return per_class[c] random real training examples of each class c (factor 1): DD-Ranking's baseline."""
    per_class = list(per_class)
    if len(per_class) != real.num_classes:
        raise ValueError(f"per_class needs one count per class ({real.num_classes}), got {len(per_class)}")
    if any(not _is_int(k) or k < 0 for k in per_class):
        raise ValueError(f"per_class counts must be non-negative integers, got {per_class}")
    g = generator(seed, "random-subset")
    # Both per class (the check above).
    chosen = [_draw(pool, k, g, c, "random_subset") for c, (pool, k) in enumerate(zip(_class_indices(real), per_class, strict=True))]
    idx = torch.cat(chosen)
    return SyntheticSet(
        images=real.x_train[idx.to(real.x_train.device)].detach().to("cpu", torch.float32).contiguous(),
        labels=_labels_by_class(per_class),
        num_classes=real.num_classes,
        kind=real.kind,
        factor=1,
        provenance={
            "method": "random-subset",
            "per_class": per_class,
            "seed": seed,
            "source": real.describe(),
            "indices": idx.tolist(),
            "versions": _versions(),
        },
    )


def noise_like(s: SyntheticSet, seed: int) -> SyntheticSet:
    """Return a set with the shapes, labels, factor and lr of `s` but standard-normal images: the noise baseline."""
    g = generator(seed, "noise-like")
    images = torch.randn(tuple(s.images.shape), generator=g, dtype=torch.float32)
    return SyntheticSet(
        images=images,
        labels=s.labels.detach().to("cpu", copy=True),
        num_classes=s.num_classes,
        kind=s.kind,
        factor=s.factor,
        lr=s.lr,
        provenance={"method": "noise", "seed": seed, "like": s.method, "versions": _versions()},
    )


# ---------------------------------------------------------------------------------------------
# Importing sets published by IDC / MTT.


def _refuse_pickle(where: Path, found: str) -> ValueError:
    return ValueError(
        f"{where}: refusing to unpickle arbitrary objects (found {found}); save plain tensors/arrays instead "
        "(torch.save of tensors, a tuple or a dict of tensors; or np.savez of numeric arrays)"
    )


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _torch_load(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # torch names the refused global as "Unsupported global: GLOBAL module.name was not ..."
        match = re.search(r"GLOBAL (\S+)", str(e))
        detail = f"pickled global {match.group(1)}" if match else "a pickled object that is not a tensor"
        raise _refuse_pickle(path, detail) from None
    except (RuntimeError, OSError, EOFError, ValueError, zipfile.BadZipFile) as e:
        raise ValueError(f"{path}: cannot read as a torch file ({type(e).__name__}: {e})") from None


def _npz_array(npz: np.lib.npyio.NpzFile, key: str, path: Path) -> np.ndarray:
    try:
        return npz[key]
    except ValueError as e:
        if "allow_pickle" in str(e) or "Object arrays" in str(e):
            raise _refuse_pickle(path, f"an object array under {key!r}") from None
        raise ValueError(f"{path}: cannot read array {key!r} ({type(e).__name__}: {e})") from None
    except (OSError, EOFError, zlib.error, zipfile.BadZipFile) as e:
        raise ValueError(f"{path}: cannot read array {key!r} ({type(e).__name__}: {e})") from None


def _open_numpy(path: Path) -> Any:
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as e:
        if "allow_pickle" in str(e) or "Object arrays" in str(e):
            raise _refuse_pickle(path, "an object array") from None
        raise ValueError(f"{path}: cannot read as numpy data ({type(e).__name__}: {e})") from None
    except (OSError, EOFError, zlib.error, zipfile.BadZipFile) as e:
        raise ValueError(f"{path}: cannot read as numpy data ({type(e).__name__}: {e})") from None


def _pick(mapping: dict[str, Any] | list[str], keys: tuple[str, ...]) -> str | None:
    return next((k for k in keys if k in mapping), None)


def _missing_key(path: Path, what: str, keys: tuple[str, ...], present: list[str]) -> ValueError:
    return ValueError(
        f"{path}: no {what} found: expected one of the keys {', '.join(keys)}; keys present: {', '.join(map(str, present)) or 'none'}"
    )


def _marks_zca(value: Any) -> bool:
    """True unless `value` (stored under a key naming ZCA) says "not whitened": a single false or zero, or nothing."""
    if isinstance(value, (torch.Tensor, np.ndarray)):
        flat = value.reshape(-1)
        if len(flat) != 1:
            return len(flat) > 1  # an array stored beside the images (the whitening matrix, its mean): whitened
        value = flat[0].item()
    if isinstance(value, str):
        return value.strip().lower() not in ("", "0", "false", "no", "none")
    return bool(value)


def _refuse_zca(path: Path, key: str) -> ValueError:
    return ValueError(
        f"{path}: holds ZCA-whitened images (key {key!r}); they are refused: networks here train and test in the dataset's "
        "normalised space, and whitened inputs would silently mismatch the real test data. MTT, run with --zca, also saves "
        "its sets un-whitened as images_zca_<iteration>.pt (when ipc < 50 or with --force_save), in the raw [0, 1] pixel "
        "space: import that file with `space: raw` (labels_<iteration>.pt as labels_path); or map the images back with "
        f"the ZCA's inverse and save them without the {key!r} key"
    )


def _read_pair(path: Path, need_labels: bool) -> tuple[Any, Any]:
    """Return (images, labels or None) from an .npz or a weights-only .pt file, as stored.

    A dict or archive that also holds a key naming ZCA (zca, zca_matrix, ...) with a value other than a single
    false / zero is refused: its images are ZCA-whitened (see _refuse_zca)."""
    suffix = path.suffix.lower()
    if suffix == ".npz":
        npz = _open_numpy(path)
        if isinstance(npz, np.ndarray):
            raise ValueError(f"{path}: holds a single .npy array; expected an .npz archive with keys {', '.join(IMAGE_KEYS)}")
        with npz:
            for key in npz.files:
                if "zca" in key.lower() and _marks_zca(_npz_array(npz, key, path)):
                    raise _refuse_zca(path, key)
            image_key, label_key = _pick(npz.files, IMAGE_KEYS), _pick(npz.files, LABEL_KEYS)
            if image_key is None:
                raise _missing_key(path, "images", IMAGE_KEYS, list(npz.files))
            if label_key is None and need_labels:
                raise _missing_key(path, "labels (or pass labels_path)", LABEL_KEYS, list(npz.files))
            images = _npz_array(npz, image_key, path)
            labels = _npz_array(npz, label_key, path) if (label_key is not None and need_labels) else None
        return images, labels
    if suffix in _TORCH_SUFFIXES:
        obj = _torch_load(path)
        if isinstance(obj, (torch.Tensor, np.ndarray)):
            if need_labels:
                raise ValueError(f"{path}: holds only an images tensor {tuple(obj.shape)}; pass labels_path for its labels")
            return obj, None
        if isinstance(obj, (tuple, list)):
            if len(obj) != 2:
                raise ValueError(f"{path}: holds a {type(obj).__name__} of {len(obj)} items; expected (images, labels)")
            return obj[0], (obj[1] if need_labels else None)
        if isinstance(obj, dict):
            present = [str(k) for k in obj]
            for key, value in obj.items():
                if isinstance(key, str) and "zca" in key.lower() and _marks_zca(value):
                    raise _refuse_zca(path, key)
            image_key, label_key = _pick(obj, IMAGE_KEYS), _pick(obj, LABEL_KEYS)
            if image_key is None:
                raise _missing_key(path, "images", IMAGE_KEYS, present)
            if label_key is None and need_labels:
                raise _missing_key(path, "labels (or pass labels_path)", LABEL_KEYS, present)
            return obj[image_key], (obj[label_key] if need_labels else None)
        raise ValueError(f"{path}: holds a {type(obj).__name__}; expected a tensor, an (images, labels) pair or a dict")
    raise ValueError(f"{path}: unknown extension {path.suffix!r}; expected .npz, .pt or .pth")


def _read_labels_file(path: Path) -> Any:
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return _open_numpy(path)
    if suffix == ".npz":
        npz = _open_numpy(path)
        if isinstance(npz, np.ndarray):
            return npz
        with npz:
            key = _pick(npz.files, LABEL_KEYS)
            if key is None:
                raise _missing_key(path, "labels", LABEL_KEYS, list(npz.files))
            return _npz_array(npz, key, path)
    if suffix in _TORCH_SUFFIXES:
        obj = _torch_load(path)
        if isinstance(obj, dict):
            key = _pick(obj, LABEL_KEYS)
            if key is None:
                raise _missing_key(path, "labels", LABEL_KEYS, [str(k) for k in obj])
            return obj[key]
        return obj
    raise ValueError(f"{path}: unknown labels extension {path.suffix!r}; expected .pt, .pth, .npy or .npz")


def _as_tensor(value: Any, where: Path, what: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, np.ndarray):
        if value.dtype == object:
            raise _refuse_pickle(where, f"an object array for {what}")
        if value.dtype.kind not in "biuf":
            raise ValueError(f"{where}: {what} must be numeric, found dtype {value.dtype}")
        return torch.from_numpy(np.array(value, copy=True))
    if isinstance(value, (list, tuple)):
        try:
            return torch.as_tensor(np.asarray(value))
        except (TypeError, ValueError, RuntimeError) as e:
            raise ValueError(f"{where}: {what} is a {type(value).__name__} that is not a numeric array ({e})") from None
    raise ValueError(f"{where}: {what} must be a tensor or array, found {type(value).__name__}")


def _to_channels_first(x: torch.Tensor, expected: tuple[int, ...]) -> torch.Tensor:
    """Return x moved from channels-last to channels-first when only that reading matches `expected`."""
    if x.ndim < 3 or len(expected) != x.ndim - 1 or tuple(x.shape[1:]) == expected:
        return x
    channels_last = (*expected[1:], expected[0])
    if tuple(x.shape[1:]) == channels_last:
        return x.movedim(-1, 1).contiguous()
    return x


# Checking that a file's values belong to the declared space. A normalised set, like the real data after
# normalisation, has per-channel mean ~0 and std ~1; a raw one has about the real raw data's channel mean m and
# std s (Dataset.mean / .std). A file's channel (mean mu, std sd) misfits a space whose data have (a, b) by
#     misfit = max(|mu - a| / b, |ln(sd / b)|),
# its mean's distance in that space's stds, or how many e-folds its spread is off. The two spaces are
#     sep = max(|m|, |ln s|)       apart, seen from the normalised space (raw data read as normalised),
#     sep = max(|m| / s, |ln s|)   apart, seen from the raw space (normalised data read as raw).
# A set is refused only where, in every channel that tells the spaces apart (sep >= _MIN_SEPARATION), it
# fits the *other* space to within a third of sep and misses the declared one by at least two thirds of sep:
# it then looks like the other space's data far more than like the declared one's. A genuine set is refused
# only if distillation moved every channel two thirds of the way to the other space's statistics and then
# into a third of them; a missed detection (a set that drifted so far it fits neither) is preferred to that.
# Digits (raw [0, 1]: m 0.305, s 0.376) give sep 0.98 both ways: a raw set read as normalised misses by
# 0.98 > 0.65, and a raw set must keep its channel std within a factor e^0.33 = 1.39 of s and its mean within
# 0.33 s of m to be recognised. CIFAR-10 (m ~0.47, s ~0.25) gives sep 1.39 (from normalised) and 1.9 (from
# raw): IDC's raw sets are recognised while their std is within a factor 1.6 of s and their mean within
# 0.46 s of m, and a normalised set is taken for raw only if every channel has std below 0.4 and mean
# near +0.47 normalised units. Where the raw data are already about standard (MNIST-1D, the teacher task:
# m ~0, s ~1, sep < 0.5), the two readings differ by less than half a std or a factor 1.65 in scale and
# no channel can tell them apart: nothing is refused.
# ZCA-whitened images are not detected from their values: whitening leaves channel means ~0, spreads below 1
# and decorrelated pixels and channels, which a noise-initialised or low-contrast normalised set can share
# (on digits, ZCA with eps 0.1 as MTT fits it gives std 0.49 and a neighbouring-pixel correlation of 0.18,
# between white noise's 0.01 and real images' 0.39). Only files that mark themselves are refused (_read_pair).
_MIN_SEPARATION = 0.5
_FIT, _MISFIT = 1 / 3, 2 / 3
# A set whose channel root-mean-square is more than _TOO_LARGE times that of the real data in both spaces
# (1 normalised; sqrt(m^2 + s^2) raw) fits neither: no distilled set is 20x larger than the data it was
# distilled from, while 8-bit pixels (0..255) of images whose raw range is [0, 1] are ~255x larger.
_TOO_LARGE = 20.0


def _fmt(values: torch.Tensor) -> str:
    return "[" + ", ".join(f"{v:.3g}" for v in values.tolist()) + "]"


def _misfit(mu: torch.Tensor, sd: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Return max(|mu - a| / b, |ln(sd / b)|) per channel (inf for a constant channel: it fits no space)."""
    return torch.maximum((mu - a).abs() / b, torch.log(sd / b).abs())


def _check_space(images: torch.Tensor, real: Dataset, space: str, path: Path) -> None:
    """Raise ValueError when `images` (as stored) plainly belong to the other space than `space`, or to neither."""
    if real.mean is None or real.std is None or images.shape[0] == 0:
        return  # `real` is not normalised: raw and normalised are one space
    dims = tuple(range(images.ndim)) if real.kind == "vector" else (0, *range(2, images.ndim))
    var, mean = torch.var_mean(images, dim=dims, correction=0)
    mu, sd = mean.double().reshape(-1), var.double().clamp_min(0).sqrt().reshape(-1)
    m, s = torch.tensor(real.mean, dtype=torch.float64), torch.tensor(real.std, dtype=torch.float64)
    zero, one = torch.zeros_like(m), torch.ones_like(s)
    observed = (
        f"per-channel mean {_fmt(mu)}, std {_fmt(sd)}, values in [{float(images.min()):.3g}, {float(images.max()):.3g}]; "
        f"dataset {real.name!r} has raw mean {_fmt(m)}, std {_fmt(s)}, and normalised mean 0, std 1"
    )
    rms = (mu**2 + sd**2).sqrt()
    if bool((rms > _TOO_LARGE * torch.maximum(one, (m**2 + s**2).sqrt())).all()):
        raise ValueError(
            f"{path}: the images fit neither the raw nor the normalised space: {observed}; they are over {_TOO_LARGE:g}x "
            f"larger than the real data in either. Check the file's scale: 8-bit pixels (0..255) of images whose raw range "
            f"is [0, 1] must be divided by 255, then imported with `space: raw`"
        )
    other = "raw" if space == "normalized" else "normalized"
    d_norm, d_raw = _misfit(mu, sd, zero, one), _misfit(mu, sd, m, s)
    if space == "normalized":
        sep, d_declared, d_other = _misfit(m, s, zero, one), d_norm, d_raw
    else:
        sep, d_declared, d_other = _misfit(zero, one, m, s), d_raw, d_norm
    telling = sep >= _MIN_SEPARATION
    if not bool(telling.any()):
        return
    looks_other = (d_other <= _FIT * sep) & (d_declared >= _MISFIT * sep)
    if bool(looks_other[telling].all()):
        what = "raw (unnormalised)" if other == "raw" else "already normalised"
        hint = (
            "to normalise them on import (IDC's published sets are raw [0, 1] images)"
            if other == "raw"
            else "to import them as they are (sets published by DC, DM and MTT without --zca are normalised)"
        )
        raise ValueError(
            f"{path}: imported with `space: {space}` but the images look {what}: {observed}. "
            f"Set `space: {other}` (synthetic.sets.<name>.space={other}) {hint}"
        )


def import_synthetic(
    path: str | Path,
    real: Dataset,
    *,
    labels_path: str | Path | None = None,
    factor: int = 1,
    space: str = "normalized",
) -> SyntheticSet:
    """Return the synthetic set stored in `path` (.npz, or .pt/.pth read weights-only) for the dataset `real`.

    Images must be (N, *real.input_shape) (channels-last is transposed when unambiguous); labels come
    from the file, or from `labels_path` when given. space="raw" maps images from the real dataset's raw
    scale into its normalised space with real.mean / real.std (nothing to do when `real` is not normalised).
    Refused with a ValueError naming the file: pickled objects (never executed); images whose per-channel
    mean and std plainly fit the other space than `space` (the message names the `space` to set) or neither
    (e.g. 8-bit pixels); files marked ZCA-whitened by a key naming ZCA. Whitened images without such a key
    cannot be told from normalised ones by their values and are not detected (see the notes above _MIN_SEPARATION).
    """
    path = Path(path)
    if space not in SPACES:
        raise ValueError(f"space must be one of {', '.join(SPACES)}, got {space!r}")
    _check_kind_factor(real.kind, factor)
    if not path.is_file():
        raise FileNotFoundError(f"synthetic set file {path} not found")
    lpath = None if labels_path is None else Path(labels_path)
    if lpath is not None and not lpath.is_file():
        raise FileNotFoundError(f"labels file {lpath} not found")
    if path.suffix.lower() not in (".npz", *_TORCH_SUFFIXES):
        raise ValueError(f"{path}: unknown extension {path.suffix!r}; expected .npz, .pt or .pth")

    raw_images, raw_labels = _read_pair(path, need_labels=lpath is None)
    if lpath is not None:
        raw_labels = _read_labels_file(lpath)
    label_where = lpath if lpath is not None else path

    images = _as_tensor(raw_images, path, "images")
    expected = real.input_shape
    images = _to_channels_first(images, expected)
    if images.ndim != len(expected) + 1 or tuple(images.shape[1:]) != expected:
        raise ValueError(
            f"{path}: images have shape {tuple(images.shape)}; expected (N, {', '.join(map(str, expected))}) "
            f"= (N, *input_shape) of dataset {real.name!r}"
        )
    if images.dtype.is_complex or images.dtype == torch.bool:
        raise ValueError(f"{path}: images must be real numbers, found dtype {images.dtype}")
    images = images.to(torch.float32)
    if not torch.isfinite(images).all():
        raise ValueError(f"{path}: images contain NaN or infinite values")

    labels = _as_tensor(raw_labels, label_where, "labels")
    if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool:
        raise ValueError(
            f"{label_where}: labels must be integer class indices, found dtype {labels.dtype} (soft or one-hot labels are not supported)"
        )
    if labels.ndim != 1 or len(labels) != len(images):
        raise ValueError(f"{label_where}: labels have shape {tuple(labels.shape)}; expected ({len(images)},), one per image in {path}")
    labels = labels.to(torch.int64)
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= real.num_classes):
        raise ValueError(
            f"{label_where}: labels lie in [{int(labels.min())}, {int(labels.max())}]; expected 0..{real.num_classes - 1} "
            f"for dataset {real.name!r}"
        )

    _check_space(images, real, space, path)
    if space == "raw" and real.mean is not None and real.std is not None:
        shape = (1, -1) + (1,) * (images.ndim - 2) if real.kind != "vector" else ()
        mean = torch.tensor(real.mean, dtype=torch.float32).reshape(shape)
        std = torch.tensor(real.std, dtype=torch.float32).reshape(shape)
        images = (images - mean) / std
    provenance: dict[str, Any] = {
        "method": "import",
        "file": str(path),
        "factor": factor,
        "space": space,
        "sha256": _sha256(path),
        "source": real.describe(),
        "versions": _versions(),
    }
    if lpath is not None:
        provenance["labels_file"] = str(lpath)
        provenance["labels_sha256"] = _sha256(lpath)
    try:
        return SyntheticSet(
            images=images.contiguous(),
            labels=labels,
            num_classes=real.num_classes,
            kind=real.kind,
            factor=factor,
            provenance=provenance,
        )
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
