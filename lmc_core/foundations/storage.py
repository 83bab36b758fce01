"""Run-directory files: weights and masks as safetensors, arrays as npz, metadata as JSON; never pickle.

Every write goes to a temporary file first and is renamed into place, so a crash leaves either the
old file or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file


def _atomic(path: Path, write: Callable[[str], object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor]) -> None:
    """Write a dict of tensors (weights, buffers, bool masks) to a safetensors file."""
    data = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    _atomic(Path(path), lambda tmp: save_file(data, tmp))


def load_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Return the tensors stored in a safetensors file (no code is executed on load)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"missing tensor file {path}")
    return load_file(str(path))


def save_arrays(path: str | Path, arrays: dict[str, np.ndarray]) -> None:
    """Write numeric arrays to an uncompressed .npz file."""

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            # Typed as Any values: mypy matches a ** mapping against every keyword of savez, `allow_pickle: bool` included.
            payload: dict[str, Any] = {k: np.asarray(v) for k, v in arrays.items()}
            np.savez(f, **payload)

    _atomic(Path(path), write)


def load_arrays(path: str | Path) -> dict[str, np.ndarray]:
    """Return the arrays of an .npz file, refusing pickled objects."""
    with np.load(Path(path), allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def save_json(path: str | Path, obj: Any) -> None:
    """Write `obj` as indented JSON."""
    text = json.dumps(obj, indent=2, sort_keys=False, default=_jsonable)
    _atomic(Path(path), lambda tmp: Path(tmp).write_text(text + "\n"))


def load_json(path: str | Path) -> Any:
    """Return the parsed JSON file."""
    return json.loads(Path(path).read_text())


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON-serialisable: {type(obj).__name__}")
