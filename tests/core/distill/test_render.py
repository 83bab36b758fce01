import struct
import zlib

import numpy as np
import pytest
import torch

from lmc_core.distill.render import SIGNAL_BOX, _line_plot, png_bytes, preview
from lmc_core.distill.synthetic import SyntheticSet


def decode_png(blob: bytes) -> np.ndarray:
    """A minimal reader for what png_bytes writes (8-bit, filter 0): enough to check pixels round-trip."""
    assert blob[:8] == b"\x89PNG\r\n\x1a\n"
    pos, chunks = 8, {}
    while pos < len(blob):
        (length,) = struct.unpack(">I", blob[pos : pos + 4])
        kind, data = blob[pos + 4 : pos + 8], blob[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", blob[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(kind + data) & 0xFFFFFFFF, f"bad CRC in {kind!r}"
        chunks[kind] = data
        pos += 12 + length
    w, h, _depth, colour = struct.unpack(">IIBB", chunks[b"IHDR"][:10])
    channels = 3 if colour == 2 else 1
    raw = zlib.decompress(chunks[b"IDAT"])
    rows = [raw[r * (w * channels + 1) : (r + 1) * (w * channels + 1)] for r in range(h)]
    assert all(row[0] == 0 for row in rows)
    out = np.frombuffer(b"".join(row[1:] for row in rows), dtype=np.uint8).reshape(h, w, channels)
    return out[:, :, 0] if channels == 1 else out


@pytest.mark.parametrize("shape", [(5, 7), (4, 6, 3)])
def test_png_round_trips_pixels(shape):
    pic = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    assert np.array_equal(decode_png(png_bytes(pic)), pic)


def test_png_refuses_what_it_cannot_encode():
    with pytest.raises(ValueError, match="uint8"):
        png_bytes(np.zeros((3, 3), dtype=np.float32))


def test_image_preview_has_a_row_per_class_and_keeps_pixel_order():
    images = torch.arange(3 * 2 * 1 * 4 * 4, dtype=torch.float32).view(6, 1, 4, 4)
    s = SyntheticSet(images=images, labels=torch.tensor([0, 0, 1, 1, 2, 2]), num_classes=3, kind="image")
    grid = preview(s, per_class=2)
    assert grid.shape == (3 * 5 - 1, 2 * 5 - 1)
    assert grid[0, 0] == 0 and grid[-1, -1] == 255, "one scale for the whole set: darkest first, brightest last"
    tile = grid[5:9, 5:9]  # class 1, second example = images[3]
    assert np.all(np.diff(tile.astype(int).ravel()) >= 0), "pixels keep their row-major order"


def test_signal_line_plot_puts_the_maximum_at_the_top_and_the_minimum_at_the_bottom():
    box = _line_plot(np.array([0.0, 1.0, 0.0, -1.0]), -1.0, 1.0)
    h, w = SIGNAL_BOX
    assert box.shape == (h, w)
    column_of_max = round((w - 1) / 3)
    assert box[0, column_of_max] == 255 and box[h - 1, w - 1] == 255
    assert (box.max(axis=0) == 255).all(), "the line is connected: every column is drawn"
