"""Training-time data augmentation, applied to a whole batch at once.

All randomness is drawn on the CPU from the generator the caller passes (one per training copy), then
moved to the batch's device, so the augmented batch is the same on CPU and GPU and two copies differ
only through their generators.
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F

from lmc_core.data.dsa import DSA, resolve_strategy
from lmc_core.foundations.config import DataConfig

_KINDS = ("vector", "signal", "image")
# Which kind of data each augmentation makes sense for.
_NEEDS_KIND = {"shift": "signal", "crop_flip": "image"}


class BatchAugmenter(Protocol):
    """What training needs of an augmenter: an `Augmenter`, or a `DSA` (synthetic sets are evaluated with DSA directly)."""

    @property
    def active(self) -> bool: ...

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor: ...


class Augmenter:
    """Applies cfg.augmentation to training batches: 'none', 'shift' (signals), 'crop_flip' (images) or 'dsa' (lmc_core.data.dsa).

    With 'dsa', cfg.dsa_strategy may name a mode before a colon: PAPER_STRATEGY = "idc:color_crop_flip_scale_rotate"
    is the paper's real-data recipe (IDC's train.py: flip and color on every batch plus one of crop, scale, rotate).
    """

    def __init__(self, cfg: DataConfig, kind: str):
        if kind not in _KINDS:
            raise ValueError(f"unknown data kind {kind!r}; expected one of {', '.join(_KINDS)}")
        mode = cfg.augmentation
        needed = _NEEDS_KIND.get(mode)
        if needed is not None and kind != needed:
            raise ValueError(f"augmentation {mode!r} needs {needed} data, but this dataset's kind is {kind!r}")
        self.mode = mode
        self.kind = kind
        self.max_shift = cfg.max_shift
        self.padding = cfg.crop_padding
        self.dsa = DSA(resolve_strategy(cfg.dsa_strategy, kind), kind) if mode == "dsa" else None

    @property
    def active(self) -> bool:
        """Return whether calling the augmenter can change a batch (and so draws random numbers)."""
        if self.mode == "shift":
            return self.max_shift > 0
        if self.dsa is not None:
            return self.dsa.active
        return self.mode == "crop_flip"

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Return the augmented batch (a new tensor), or `x` itself when the augmenter is inactive."""
        if not self.active:
            return x
        if generator.device.type != "cpu":
            raise ValueError("Augmenter needs a CPU torch.Generator, so that results match across devices")
        if self.mode == "shift":
            return random_circular_shift(x, self.max_shift, generator)
        if self.dsa is not None:
            with torch.no_grad():  # training batches need no gradient through the augmentation
                return self.dsa(x, generator)
        return random_crop_flip(x, self.padding, generator)

    def __repr__(self) -> str:
        return f"Augmenter(mode={self.mode!r}, kind={self.kind!r}, max_shift={self.max_shift}, padding={self.padding})"


def random_circular_shift(x: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Return `x` (N, C, L) with each sample rolled along L by its own integer drawn from [-max_shift, max_shift]."""
    if x.ndim != 3:
        raise ValueError(f"'shift' augments signals of shape (N, C, L), got {tuple(x.shape)}")
    n, c, length = x.shape
    shift = torch.randint(-max_shift, max_shift + 1, (n,), generator=generator).to(x.device)
    # out[i] = x[i - s mod L] is exactly torch.roll(x, s), done for every sample in one gather.
    source = (torch.arange(length, device=x.device) - shift[:, None]) % length
    return x.gather(2, source[:, None, :].expand(n, c, length))


def random_crop_flip(x: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Return `x` (N, C, H, W) zero-padded by `padding`, randomly cropped back to H x W, and flipped with p = 0.5."""
    if x.ndim != 4:
        raise ValueError(f"'crop_flip' augments images of shape (N, C, H, W), got {tuple(x.shape)}")
    n, c, h, w = x.shape
    # Drawn in a fixed order (row offsets, column offsets, flips) so one generator state fixes the batch.
    top = torch.randint(0, 2 * padding + 1, (n,), generator=generator).to(x.device)
    left = torch.randint(0, 2 * padding + 1, (n,), generator=generator).to(x.device)
    flip = (torch.rand(n, generator=generator) < 0.5).to(x.device)
    padded = F.pad(x, (padding, padding, padding, padding)) if padding else x
    rows = top[:, None] + torch.arange(h, device=x.device)
    cols = left[:, None] + torch.arange(w, device=x.device)
    cols = torch.where(flip[:, None], cols.flip(1), cols)  # a flip is just reading the columns backwards
    out = padded.gather(2, rows[:, None, :, None].expand(n, c, h, padded.shape[3]))
    return out.gather(3, cols[:, None, None, :].expand(n, c, h, w))
