"""Read a safetensors file into numpy without torch: an 8-byte header length, a JSON header, then raw little-endian data."""

from __future__ import annotations

import json
import struct

import numpy as np

_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1", "U8": "u1", "BOOL": "?"}
MAX_HEADER = 10_000_000  # the format's own limit is 100 MB; a synthetic set's header is a few hundred bytes


def load(blob: bytes) -> dict[str, np.ndarray]:
    """Return the tensors of a safetensors file as numpy arrays (no pickle, no torch)."""
    if len(blob) < 8:
        raise ValueError("not a safetensors file: shorter than its 8-byte header length")
    (n,) = struct.unpack("<Q", blob[:8])
    if n > MAX_HEADER or 8 + n > len(blob):
        raise ValueError("not a safetensors file: header length out of range")
    header = json.loads(blob[8 : 8 + n])
    data = memoryview(blob)[8 + n :]
    out = {}
    for name, spec in header.items():
        if name == "__metadata__":
            continue
        if spec["dtype"] not in _DTYPES:
            raise ValueError(f"tensor {name}: dtype {spec['dtype']} is not supported here")
        start, end = spec["data_offsets"]
        out[name] = np.frombuffer(data[start:end], dtype=_DTYPES[spec["dtype"]]).reshape(spec["shape"])
    return out
