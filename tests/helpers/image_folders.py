"""Writers of tiny image folders in torchvision's ImageFolder layout, with pixels the tests know.

Each class gets its own flat colour (`class_colour`), so a test can tell from a decoded pixel which class folder an
image came from, and therefore check labels against folder names without trusting the reader's order.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def class_colour(index: int) -> tuple[int, int, int]:
    """Return an RGB colour for class `index`; classes 0..63 get distinct colours, and any two differ in every channel."""
    return ((5 + 53 * index) % 256, (40 + 29 * index) % 256, (90 + 71 * index) % 256)


def write_image(path: Path, pixels: np.ndarray) -> Path:
    """Write uint8 (H, W, 3) or (H, W) pixels to `path`; the format follows the suffix (PNG lossless, JPEG lossy)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(pixels)
    if path.suffix.lower() in (".jpg", ".jpeg"):
        image.save(path, format="JPEG", quality=95)
    else:
        image.save(path, format="PNG")
    return path


def write_image_folder(
    root: Path,
    classes: list[str],
    n_train: int,
    n_test: int,
    *,
    size: tuple[int, int] = (40, 40),
    test_folder: str = "val",
    suffix: str = ".png",
) -> dict[str, tuple[int, int, int]]:
    """Write `n_train` / `n_test` flat-colour images of `size` (W, H) per class under root/train and root/<test_folder>.

    Returns each class folder's colour (class i of `classes` gets class_colour(i)).
    """
    colours = {}
    w, h = size
    for i, name in enumerate(classes):
        colour = class_colour(i)
        colours[name] = colour
        pixels = np.broadcast_to(np.array(colour, dtype=np.uint8), (h, w, 3)).copy()
        for split, n in (("train", n_train), (test_folder, n_test)):
            for j in range(n):
                write_image(root / split / name / f"{name}_{j:04d}{suffix}", pixels)
    return colours
