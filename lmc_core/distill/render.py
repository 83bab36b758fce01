"""Pictures of synthetic sets without a plotting library: a class-per-row grid as a uint8 array, and PNG bytes.

Images are shown as they are (denormalised with the real dataset's mean and std when known, then
scaled to the set's own range); 1-D signals are drawn as line plots, one small box per example.
The dashboard draws its own interactive plots; these pictures are for files, thumbnails and terminals.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import torch

from lmc_core.distill.synthetic import SyntheticSet

SIGNAL_BOX = (32, 48)  # height, width of one signal's line plot, in pixels
GAP = 1


def _to_bytes(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return np.zeros(x.shape, dtype=np.uint8) if hi <= lo else np.round((x - lo) / (hi - lo) * 255).clip(0, 255).astype(np.uint8)


def _line_plot(signal: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Return a (H, W) uint8 box with the signal drawn as a connected white line on black."""
    h, w = SIGNAL_BOX
    box = np.zeros((h, w), dtype=np.uint8)
    xs = np.linspace(0, w - 1, len(signal)).round().astype(int)
    ys = ((1 - (signal - lo) / (hi - lo if hi > lo else 1.0)) * (h - 1)).round().astype(int).clip(0, h - 1)
    # xs and ys hold one entry per sample, so the pairs of neighbours line up.
    for (x0, y0), (x1, y1) in zip(zip(xs[:-1], ys[:-1], strict=True), zip(xs[1:], ys[1:], strict=True), strict=True):
        steps = max(abs(x1 - x0), abs(y1 - y0), 1)
        for t in np.linspace(0, 1, steps + 1):
            box[round(y0 + (y1 - y0) * t), round(x0 + (x1 - x0) * t)] = 255
    return box


def preview(
    s: SyntheticSet, mean: tuple[float, ...] | None = None, std: tuple[float, ...] | None = None, per_class: int = 10
) -> np.ndarray:
    """Return up to `per_class` decoded examples per class as one (H, W) or (H, W, 3) uint8 grid, a row per class."""
    x, y = s.decode()
    x = x.detach().float().cpu()
    if s.kind == "vector":
        raise ValueError("vector data has no picture; look at the set's numbers instead")
    if mean is not None and std is not None:
        shape = (1, -1) + (1,) * (x.ndim - 2)
        x = x * torch.tensor(std).view(shape) + torch.tensor(mean).view(shape)
    lo, hi = float(x.min()), float(x.max())  # one scale for the whole set, so tiles compare
    rows = []
    for c in range(s.num_classes):
        members = x[y == c][:per_class].numpy()
        if s.kind == "image":
            rows.append([_to_bytes(img, lo, hi).transpose(1, 2, 0) for img in members])  # (H, W, C)
        else:
            rows.append([_line_plot(sig.mean(0), lo, hi)[:, :, None] for sig in members])
    th, tw, channels = next(tile for row in rows for tile in row).shape
    grid = np.full((len(rows) * (th + GAP) - GAP, per_class * (tw + GAP) - GAP, channels), 96, dtype=np.uint8)  # grey gaps
    for i, row in enumerate(rows):
        for j, tile in enumerate(row):
            grid[i * (th + GAP) : i * (th + GAP) + th, j * (tw + GAP) : j * (tw + GAP) + tw] = tile
    return grid[:, :, 0] if channels == 1 else grid


def png_bytes(picture: np.ndarray) -> bytes:
    """Return `picture` ((H, W) grey or (H, W, 3) RGB, uint8) encoded as a PNG file."""
    if picture.dtype != np.uint8 or picture.ndim not in (2, 3) or (picture.ndim == 3 and picture.shape[2] != 3):
        raise ValueError(f"png_bytes needs uint8 (H, W) or (H, W, 3), got {picture.dtype} {picture.shape}")
    h, w = picture.shape[:2]
    colour = 2 if picture.ndim == 3 else 0
    raw = b"".join(b"\x00" + picture[r].tobytes() for r in range(h))  # filter type 0 on every row

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", w, h, 8, colour, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


def write_png(path: str | Path, picture: np.ndarray) -> None:
    Path(path).write_bytes(png_bytes(picture))
