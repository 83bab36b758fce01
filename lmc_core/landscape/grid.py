"""Grids over a plane: exact symmetric axes, and the coarse-to-fine order that makes early previews complete."""

from __future__ import annotations

import math

import numpy as np

# --------------------------------------------------------------------------- grids


def grid_axis(span: float, resolution: int) -> np.ndarray:
    """Return `resolution` exact, symmetric coordinates in [-span, span]: span * k / half for k = -half .. half (0 included exactly)."""
    resolution = int(resolution)
    if resolution < 1 or resolution % 2 == 0:
        raise ValueError(
            f"grid resolution must be a positive odd number so the grid is symmetric and contains the centre, got {resolution}; "
            + (f"use {resolution - 1} or {resolution + 1}" if resolution >= 2 else "use 1 or 3")
        )
    if not (math.isfinite(span) and span > 0):
        raise ValueError(f"span must be a positive finite number, got {span}")
    half = resolution // 2
    if half == 0:
        return np.zeros(1)
    k = np.arange(-half, half + 1, dtype=np.float64)
    out = float(span) * k / half
    out[half] = 0.0
    return out


def _level(i: int, n: int) -> int:
    """0 for the coarse subgrid (offsets from the centre that are multiples of 4, plus both ends), 1 for every 2nd, 2 for the rest."""
    off = i - (n - 1) // 2
    if off % 4 == 0 or i == 0 or i == n - 1:
        return 0
    if off % 2 == 0:
        return 1
    return 2


def coarse_to_fine(resolution: int) -> np.ndarray:
    """Return a permutation of range(resolution): the every-4th subgrid (around the centre, ends included), then every-2nd,
    then the rest.
    """
    n = int(resolution)
    if n < 1:
        raise ValueError(f"resolution must be positive, got {resolution}")
    return np.array(sorted(range(n), key=lambda i: (_level(i, n), i)), dtype=np.int64)


def coarse_to_fine_2d(nx: int, ny: int) -> list[tuple[int, int]]:
    """Return all (i, j) of an nx x ny grid ordered by level (max of both axes' levels), then row-major."""
    pts = [(i, j) for i in range(nx) for j in range(ny)]
    return sorted(pts, key=lambda p: (max(_level(p[0], nx), _level(p[1], ny)), p[0], p[1]))
