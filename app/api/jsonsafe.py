"""Strict JSON: NaN and infinities (a diverged loss, a surface not yet evaluated) become null, numpy scalars become numbers."""

from __future__ import annotations

import math
from typing import Any

import numpy as np


def jsonsafe(obj: Any) -> Any:
    """Return `obj` with non-finite floats replaced by None and numpy scalars and arrays made plain Python."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): jsonsafe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonsafe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonsafe(obj.tolist())
    if isinstance(obj, np.generic):
        return jsonsafe(obj.item())
    return obj
