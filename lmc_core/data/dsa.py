"""Differentiable Siamese Augmentation (DSA, Zhao & Bilen 2021) and CutMix (Yun et al. 2019).

Dataset distillation augments a real batch and a synthetic batch with the *same* transform and
backpropagates through the augmentation into the synthetic images. Every transform here is built
from operations autograd can follow (affine_grid/grid_sample, gather, where, multiplicative masks),
so gradients reach the input.

A strategy names transforms joined by '_' and, optionally, a mode before a colon: "single" (the
default) applies one transform of the strategy per call, drawn uniformly, as DSA's seeded mode 'S'
does while DC, DM and MTT match; "all" applies every one, in strategy order; "idc" is IDC's DiffAug
recipe (Kim et al. 2022, github.com/snu-mllab/Efficient-Dataset-Condensation, misc/augment.py with
its default single_aug=True): flip and color, when named, on every call, then exactly one of the
other transforms (crop, scale, rotate; shift, scale for signals), drawn uniformly per call, then
cutout, when named, on every call. The paper trains with IDC's train.py, whose real-data and
synthetic-data augmentation is "idc:color_crop_flip_scale_rotate" (PAPER_STRATEGY: cutout is dropped
because CutMix is on); IDC matches with "idc:color_crop_cutout" and trains its matching networks with
"idc:color_crop".

Siamese use: give both batches a generator in the same state (`siamese(g)`, or two generators
seeded alike). Parameters are drawn per sample: each call draws, from the CPU generator only,
  1. in mode "single", the one transform it applies: torch.randint(len(names), (1,)); in mode
     "idc", the one transform of the pool (the names other than flip, color and cutout, in strategy
     order) it applies: torch.randint(len(pool), (1,)), drawn only when the pool is not empty;
  2. one float64 uniform matrix torch.rand(N, K), whose columns feed the applied transforms in
     the order they are applied (strategy order; in mode "idc" flip, color, the drawn one, cutout;
     "color" = brightness, saturation, contrast, one column each; crop, cutout and scale take two,
     the others one).
Row i of that matrix decides sample i's transform, and CPU draws fill it row by row, so sample i of
two batches augmented from the same generator state gets the same transform even when the batches
differ in size (real and synthetic batches usually do). The draws are converted to parameters on
the CPU and only then moved to the batch's device, so CPU and GPU see the same parameters.
While matching, distillation passes shared=True: one row for the whole batch (DSA's seeded
'batchmode'), so every real and synthetic example gets the one transform.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class DSAParams:
    """Strengths of the transforms; the defaults are DSA's published ones (ParamDiffAug)."""

    scale: float = 1.2  # per-axis scale factor uniform in [1/scale, scale]
    rotate: float = 15.0  # degrees, uniform in [-rotate, rotate]
    crop: float = 0.125  # translation, a fraction of the size, uniform in [-crop, crop], in whole pixels
    cutout: float = 0.5  # side of the zeroed box, a fraction of the size
    brightness: float = 1.0  # adds (U[0, 1) - 0.5) * brightness
    saturation: float = 2.0  # scales the distance to the per-pixel channel mean by U[0, saturation)
    contrast: float = 0.5  # scales the distance to the per-sample mean by U[0, 1) + contrast
    flip: float = 0.5  # probability of a horizontal flip
    shift: float = 0.125  # signals: circular shift by up to this fraction of the length, in whole samples

    def __post_init__(self) -> None:
        if self.scale < 1:
            raise ValueError(f"DSAParams.scale must be >= 1 (factors lie in [1/scale, scale]), got {self.scale}")
        for name in ("rotate", "brightness", "saturation", "contrast"):
            if getattr(self, name) < 0:
                raise ValueError(f"DSAParams.{name} must be >= 0, got {getattr(self, name)}")
        for name in ("crop", "cutout", "flip", "shift"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"DSAParams.{name} must lie in [0, 1], got {getattr(self, name)}")


IMAGE_STRATEGY = "color_crop_cutout_flip_scale_rotate"
SIGNAL_STRATEGY = "shift_scale"
STRATEGIES = {"image": ("color", "crop", "cutout", "flip", "scale", "rotate"), "signal": ("shift", "scale"), "vector": ()}
MODES = ("single", "all", "idc")
# IDC's DiffAug applies these on every call in mode "idc" (flip and color before the drawn transform, cutout after it).
IDC_EVERY_CALL = ("flip", "color", "cutout")
PAPER_STRATEGY = "idc:color_crop_flip_scale_rotate"

_RANKS = {"image": (4, "(N, C, H, W)"), "signal": (3, "(N, C, L)"), "vector": (2, "(N, F)")}
_PARTS = {"color": ("brightness", "saturation", "contrast")}


def split_strategy(strategy: str) -> tuple[str | None, str]:
    """Return (mode or None, transform names) of a strategy written "[mode:]names", e.g. "idc:color_crop"."""
    if ":" not in strategy:
        return None, strategy
    mode, _, names = strategy.partition(":")
    if mode not in MODES:
        raise ValueError(
            f"DSA strategy {strategy!r} names mode {mode!r}; a strategy is '[mode:]names' with mode one of {', '.join(MODES)}, "
            f"e.g. {PAPER_STRATEGY!r}"
        )
    return mode, names


def resolve_strategy(strategy: str, kind: str) -> str:
    """Return the strategy with 'auto' replaced by every transform valid for `kind` ('none' for vectors); a mode prefix is kept."""
    if kind not in STRATEGIES:
        raise ValueError(f"unknown data kind {kind!r}; expected one of {', '.join(STRATEGIES)}")
    mode, names = split_strategy(strategy)
    if names == "auto":
        names = "_".join(STRATEGIES[kind])
        if not names:
            return "none"
    return names if mode is None else f"{mode}:{names}"


def siamese(generator: torch.Generator) -> torch.Generator:
    """Return a new CPU generator at the same state, so the same draws can be applied to a real and a synthetic batch."""
    _check_generator(generator)
    twin = torch.Generator()
    twin.set_state(generator.get_state())
    return twin


class DSA:
    """Applies a DSA strategy ("[mode:]color_crop_..." or "none") to batches of one data kind, differentiably.

    The mode comes from the strategy's prefix or from `mode`; None (and no prefix) means "single".
    """

    def __init__(self, strategy: str, kind: str, params: DSAParams = DSAParams(), mode: str | None = None):
        if kind not in STRATEGIES:
            raise ValueError(f"unknown data kind {kind!r}; expected one of {', '.join(STRATEGIES)}")
        prefix, strategy = split_strategy(strategy)
        if mode is not None and mode not in MODES:
            raise ValueError(
                f"unknown DSA mode {mode!r}; expected 'single' (one random transform per call), 'all' or 'idc' "
                "(flip and color every call plus one drawn transform, then cutout)"
            )
        if prefix is not None and mode is not None and prefix != mode:
            raise ValueError(f"DSA strategy prefix {prefix!r} contradicts mode={mode!r}; give the mode once")
        mode = prefix or mode or "single"
        names = () if strategy in ("", "none") else tuple(strategy.split("_"))
        valid = STRATEGIES[kind]
        for name in names:
            if name not in valid:
                allowed = ", ".join(valid) if valid else "none (vectors take no augmentation)"
                raise ValueError(f"DSA transform {name!r} is not valid for {kind} data; valid names: {allowed}, joined by '_', or 'none'")
        if len(set(names)) != len(names):
            raise ValueError(f"DSA strategy {strategy!r} names a transform twice")
        self.names = names
        self.strategy = "_".join(names) or "none"
        self.kind = kind
        self.params = params
        self.mode = mode
        # Mode "idc": the transforms applied on every call, and the pool one is drawn from per call.
        self._pool = tuple(n for n in names if n not in IDC_EVERY_CALL)
        self._before = tuple(n for n in IDC_EVERY_CALL[:2] if n in names)
        self._after = tuple(n for n in IDC_EVERY_CALL[2:] if n in names)

    @property
    def active(self) -> bool:
        """Return whether calling can change a batch (and so draws random numbers)."""
        return bool(self.names)

    def __call__(self, x: torch.Tensor, generator: torch.Generator, *, shared: bool = False) -> torch.Tensor:
        """Return the augmented batch (a new tensor, differentiable w.r.t. `x`), or `x` itself when inactive.

        shared=True draws one set of parameters for the whole batch, as DSA does while matching (its
        seeded 'batchmode'), so a real and a synthetic batch of any sizes get the same transform.
        """
        rank, layout = _RANKS[self.kind]
        if x.ndim != rank:
            raise ValueError(f"DSA for {self.kind} data expects a batch of shape {layout}, got {tuple(x.shape)}")
        if not self.active:
            return x
        _check_generator(generator)
        names = self.names
        if self.mode == "single":
            names = (names[int(torch.randint(len(names), (1,), generator=generator))],)
        elif self.mode == "idc":
            drawn = (self._pool[int(torch.randint(len(self._pool), (1,), generator=generator))],) if self._pool else ()
            names = (*self._before, *drawn, *self._after)
        steps = [_PRIMITIVES[part] for name in names for part in _PARTS.get(name, (name,))]
        draws = torch.rand(1 if shared else x.shape[0], sum(s.draws for s in steps), generator=generator, dtype=torch.float64)
        draws = draws.expand(x.shape[0], -1)
        params, col = [], 0
        for step in steps:
            params.append(step.draw(draws[:, col : col + step.draws], self.params, x.shape))
            col += step.draws
        for step, p in zip(steps, params, strict=True):  # one draw per step
            x = step.apply(x, p.to(x.device, x.dtype) if p.is_floating_point() else p.to(x.device))
        return x

    def __repr__(self) -> str:
        return f"DSA(strategy={self.strategy!r}, kind={self.kind!r}, mode={self.mode!r}, params={self.params!r})"


def cutmix(
    x: torch.Tensor, y: torch.Tensor, generator: torch.Generator, beta: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """Return (x_mixed, y, y_perm, lam_exact): CutMix (Yun et al. 2019) of the batch with a permutation of itself.

    lam ~ Beta(beta, beta); one box (images: rows x columns; signals: a segment of L) of area fraction
    about 1 - lam, centred uniformly and clipped at the border, is pasted from x[perm]. lam_exact is
    1 - (box area / full area) after clipping, so lam_exact * CE(out, y) + (1 - lam_exact) * CE(out, y_perm)
    weights each label by the share of the input it owns. Draws (in order: a seed for the Beta draw,
    the permutation, the centre) come from the CPU generator only.
    """
    if x.ndim not in (3, 4):
        raise ValueError(f"cutmix needs images (N, C, H, W) or signals (N, C, L), got shape {tuple(x.shape)}")
    if y.shape[0] != x.shape[0]:
        raise ValueError(f"cutmix needs one label per sample: {x.shape[0]} samples, {y.shape[0]} labels")
    if not beta > 0:
        raise ValueError(f"cutmix needs beta > 0, got {beta}")
    _check_generator(generator)
    # torch has no generator-aware Beta sampler; seeding numpy from the generator keeps one source of randomness.
    seed = int(torch.randint(2**62, (1,), generator=generator))
    lam = float(np.random.default_rng(seed).beta(beta, beta))
    perm = torch.randperm(x.shape[0], generator=generator)
    sizes = x.shape[2:]
    centres = [int(torch.randint(size, (1,), generator=generator)) for size in sizes]
    side = (1 - lam) ** (1 / len(sizes))  # per-axis fraction whose product is the area fraction 1 - lam
    mask = torch.zeros(sizes, dtype=torch.bool)
    box = []
    for size, centre in zip(sizes, centres, strict=True):  # one centre per axis
        cut = int(size * side)
        start = centre - cut // 2
        box.append(slice(min(max(start, 0), size), min(max(start + cut, 0), size)))
    mask[tuple(box)] = True
    lam_exact = 1.0 - int(mask.sum()) / mask.numel()
    mixed = torch.where(mask.to(x.device), x[perm.to(x.device)], x)
    return mixed, y, y[perm.to(y.device)], lam_exact


# ---- transforms: each takes the batch and its per-sample parameters, already on the batch's device ----


def _per_sample(values: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return values.view(-1, *([1] * (x.ndim - 1)))


def _brightness(x: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    return x + _per_sample(delta, x)


def _saturation(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    # The channel mean is each pixel's grey level: factor 0 gives greyscale, factor 1 the input.
    mean = x.mean(dim=1, keepdim=True)
    return (x - mean) * _per_sample(factor, x) + mean


def _contrast(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    mean = x.mean(dim=tuple(range(1, x.ndim)), keepdim=True)
    return (x - mean) * _per_sample(factor, x) + mean


def _flip(x: torch.Tensor, flipped: torch.Tensor) -> torch.Tensor:
    return torch.where(_per_sample(flipped, x), x.flip(-1), x)


def _shift(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    # out[..., j] = x[..., j - s mod L] is torch.roll(x, s) per sample, in one gather.
    n, c, length = x.shape
    source = (torch.arange(length, device=x.device) - shift[:, None]) % length
    return x.gather(2, source[:, None, :].expand(n, c, length))


def _cutout(x: torch.Tensor, box: torch.Tensor) -> torch.Tensor:
    """Zero box = (top, left, height, width) per sample; a mask product keeps the gradient elsewhere."""
    top, left, height, width = box.unbind(1)
    rows = torch.arange(x.shape[2], device=x.device)
    cols = torch.arange(x.shape[3], device=x.device)
    in_rows = (rows >= top[:, None]) & (rows < (top + height)[:, None])
    in_cols = (cols >= left[:, None]) & (cols < (left + width)[:, None])
    keep = ~(in_rows[:, :, None] & in_cols[:, None, :])
    return x * keep[:, None].to(x.dtype)


def _warp(x: torch.Tensor, theta: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
    """Sample x at theta @ (output position) in normalised coordinates, zeros outside; signals as height-1 images."""
    image = x.unsqueeze(2) if x.ndim == 3 else x
    # align_corners=False everywhere: pixel centres map to pixel centres, so the identity theta is exact.
    grid = F.affine_grid(theta, list(image.shape), align_corners=False)
    out = F.grid_sample(image, grid, mode=mode, padding_mode="zeros", align_corners=False)
    return out.squeeze(2) if x.ndim == 3 else out


def _scale(x: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """factors = (width factor, height factor) per sample; > 1 samples a wider area, so content shrinks."""
    theta = torch.zeros(x.shape[0], 2, 3, dtype=x.dtype, device=x.device)
    theta[:, 0, 0] = factors[:, 0]
    theta[:, 1, 1] = factors[:, 1]
    return _warp(x, theta)


def _rotate(x: torch.Tensor, degrees: torch.Tensor) -> torch.Tensor:
    """Rotate each image about its centre by its angle; positive turns the picture clockwise as displayed."""
    height, width = x.shape[-2:]
    angle = degrees * (math.pi / 180)
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.zeros(x.shape[0], 2, 3, dtype=x.dtype, device=x.device)
    # A rotation in pixel units, rewritten for affine_grid's [-1, 1] axes so non-square images are not sheared.
    theta[:, 0, 0] = cos
    theta[:, 0, 1] = sin * (height / width)
    theta[:, 1, 0] = -sin * (width / height)
    theta[:, 1, 1] = cos
    return _warp(x, theta)


def _crop(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Move each image's content by shift = (rows down, columns right) whole pixels, zero-filling the border."""
    height, width = x.shape[-2:]
    theta = torch.zeros(x.shape[0], 2, 3, dtype=x.dtype, device=x.device)
    theta[:, 0, 0] = 1
    theta[:, 1, 1] = 1
    theta[:, 0, 2] = -2 * shift[:, 1].to(x.dtype) / width
    theta[:, 1, 2] = -2 * shift[:, 0].to(x.dtype) / height
    # Whole-pixel shifts land on pixel centres, where nearest sampling copies values exactly.
    return _warp(x, theta, mode="nearest")


# ---- draws: uniforms (N, draws) in float64 on the CPU -> per-sample parameters on the CPU ----


def _index(u: torch.Tensor, count: int) -> torch.Tensor:
    """Uniform integers in [0, count) from uniforms in [0, 1)."""
    return (u * count).floor().clamp(max=count - 1).long()


def _signed(u: torch.Tensor, limit: int) -> torch.Tensor:
    """Uniform integers in [-limit, limit]."""
    return _index(u, 2 * limit + 1) - limit


def _pixels(fraction: float, size: int) -> int:
    return int(size * fraction + 0.5)  # DSA's rounding of a fraction of the size to whole pixels


def _draw_crop(u: torch.Tensor, p: DSAParams, shape: torch.Size) -> torch.Tensor:
    height, width = shape[-2:]
    return torch.stack([_signed(u[:, 0], _pixels(p.crop, height)), _signed(u[:, 1], _pixels(p.crop, width))], 1)


def _draw_cutout(u: torch.Tensor, p: DSAParams, shape: torch.Size) -> torch.Tensor:
    # The box stays inside the image, so it always zeroes exactly its stated size.
    height, width = shape[-2:]
    box_h, box_w = _pixels(p.cutout, height), _pixels(p.cutout, width)
    top, left = _index(u[:, 0], height - box_h + 1), _index(u[:, 1], width - box_w + 1)
    return torch.stack([top, left, torch.full_like(top, box_h), torch.full_like(left, box_w)], 1)


def _draw_scale(u: torch.Tensor, p: DSAParams, shape: torch.Size) -> torch.Tensor:
    factors = 1 / p.scale + u * (p.scale - 1 / p.scale)
    if len(shape) == 3:
        factors[:, 1] = 1.0  # signals have no height to scale
    return factors


def _draw_shift(u: torch.Tensor, p: DSAParams, shape: torch.Size) -> torch.Tensor:
    return _signed(u[:, 0], _pixels(p.shift, shape[-1]))


@dataclass(frozen=True)
class _Primitive:
    draws: int
    draw: Callable[[torch.Tensor, DSAParams, torch.Size], torch.Tensor]
    apply: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


_PRIMITIVES = {
    "brightness": _Primitive(1, lambda u, p, s: (u[:, 0] - 0.5) * p.brightness, _brightness),
    "saturation": _Primitive(1, lambda u, p, s: u[:, 0] * p.saturation, _saturation),
    "contrast": _Primitive(1, lambda u, p, s: u[:, 0] + p.contrast, _contrast),
    "crop": _Primitive(2, _draw_crop, _crop),
    "cutout": _Primitive(2, _draw_cutout, _cutout),
    "flip": _Primitive(1, lambda u, p, s: u[:, 0] < p.flip, _flip),
    "scale": _Primitive(2, _draw_scale, _scale),
    "rotate": _Primitive(1, lambda u, p, s: (2 * u[:, 0] - 1) * p.rotate, _rotate),
    "shift": _Primitive(1, _draw_shift, _shift),
}


def _check_generator(generator: torch.Generator) -> None:
    if generator.device.type != "cpu":
        raise ValueError(
            f"DSA and cutmix draw from a CPU torch.Generator (got one on {generator.device}), "
            "so that results match across devices; pass torch.Generator() instead"
        )
