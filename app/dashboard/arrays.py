"""Arrays as the API sends them: plotly typed arrays ({dtype, bdata, shape}) or lists with null for NaN."""

from __future__ import annotations

import base64
from typing import Any

import numpy as np

_DTYPES = {"f4": "<f4", "f8": "<f8", "i4": "<i4", "i2": "<i2", "i1": "i1", "u1": "u1", "u2": "<u2", "u4": "<u4"}


def decode(value: Any, dtype: str = "float32") -> np.ndarray:
    """Return a typed array or a (nested) list as a numpy array of `dtype`; None becomes NaN."""
    if value is None:
        return np.zeros(0, dtype=dtype)
    if isinstance(value, dict) and "bdata" in value:
        arr = np.frombuffer(base64.b64decode(value["bdata"]), dtype=_DTYPES[value["dtype"]])
        shape = value.get("shape")
        if shape:
            arr = arr.reshape([int(n) for n in str(shape).split(",")])
        return arr.astype(dtype)
    arr = np.asarray(value, dtype=object)
    flat = [np.nan if v is None else v for v in arr.ravel()]
    return np.asarray(flat, dtype=dtype).reshape(arr.shape)


def values(seq: list[Any] | None) -> np.ndarray:
    """Return a list of numbers-or-None from a table column as float32 with NaN for missing."""
    return decode(list(seq or []))
