"""Tests of lmc_core.data.augment: exact geometry of each augmentation, and randomness only from the generator."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from lmc_core.data.augment import Augmenter
from lmc_core.data.dsa import DSA, PAPER_STRATEGY
from lmc_core.foundations.config import DataConfig
from lmc_core.studies.presets import preset, preset_names


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def signals(n: int = 64) -> torch.Tensor:
    return torch.randn(n, 2, 40, generator=gen(1234))


def images(n: int = 64, size: int = 8) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=gen(4321))


SHIFT = Augmenter(DataConfig(augmentation="shift", max_shift=3), "signal")
CROP = Augmenter(DataConfig(augmentation="crop_flip", crop_padding=2), "image")


def shift_of(out: torch.Tensor, x: torch.Tensor, max_shift: int) -> int | None:
    """Return the s in [-max_shift, max_shift] with out == roll(x, s) over the last axis, if any."""
    for s in range(-max_shift, max_shift + 1):
        if torch.equal(out, torch.roll(x, s, dims=-1)):
            return s
    return None


def crop_of(out: torch.Tensor, x: torch.Tensor, pad: int) -> tuple[int, int, bool] | None:
    """Return (top, left, flipped) with out == [flipped] crop of zero-padded x, if any."""
    h, w = x.shape[-2:]
    padded = F.pad(x, (pad, pad, pad, pad))
    for top, left, flip in itertools.product(range(2 * pad + 1), range(2 * pad + 1), (False, True)):
        crop = padded[:, top : top + h, left : left + w]
        if torch.equal(out, crop.flip(-1) if flip else crop):
            return top, left, flip
    return None


def test_same_seed_same_output_different_seed_different():
    for aug, x in ((SHIFT, signals()), (CROP, images())):
        a, b, c = aug(x, gen(7)), aug(x, gen(7)), aug(x, gen(8))
        assert torch.equal(a, b)
        assert not torch.equal(a, c)


def test_generator_is_the_only_source_of_randomness():
    x = signals()
    torch.manual_seed(0)
    a = SHIFT(x, gen(3))
    state = torch.get_rng_state()
    torch.manual_seed(99)
    b = SHIFT(x, gen(3))
    assert torch.equal(a, b)
    torch.manual_seed(0)
    CROP(images(), gen(3))
    assert torch.equal(torch.get_rng_state(), state)  # the global stream was not consumed
    g = gen(5)
    first, second = SHIFT(x, g), SHIFT(x, g)
    assert not torch.equal(first, second)  # the generator advances between batches


def test_shift_is_a_per_sample_circular_roll():
    x = signals(200)
    before = x.clone()
    out = SHIFT(x, gen(11))
    assert out.shape == x.shape and out.data_ptr() != x.data_ptr()
    assert torch.equal(x, before)  # input untouched
    shifts = [shift_of(out[i], x[i], 3) for i in range(len(x))]
    assert None not in shifts  # every row is an exact roll of its own input (both channels alike)
    assert set(shifts) == set(range(-3, 4))  # per sample, every allowed shift occurs


def test_shift_range_respected_for_larger_shift():
    x = signals(300)
    out = Augmenter(DataConfig(augmentation="shift", max_shift=10), "signal")(x, gen(2))
    shifts = [shift_of(out[i], x[i], 10) for i in range(len(x))]
    assert None not in shifts and min(shifts) == -10 and max(shifts) == 10


def test_crop_flip_is_a_padded_crop_with_random_flip():
    x = images(200)
    out = CROP(x, gen(21))
    assert out.shape == x.shape and out.dtype == x.dtype
    found = [crop_of(out[i], x[i], 2) for i in range(len(x))]
    assert None not in found
    tops, lefts, flips = zip(*found, strict=True)
    assert set(tops) == set(range(5)) and set(lefts) == set(range(5))
    assert 0.35 < sum(flips) / len(flips) < 0.65


def test_crop_flip_without_padding_only_flips():
    x = images(50)
    out = Augmenter(DataConfig(augmentation="crop_flip", crop_padding=0), "image")(x, gen(0))
    flipped = [torch.equal(out[i], x[i].flip(-1)) for i in range(len(x))]
    kept = [torch.equal(out[i], x[i]) for i in range(len(x))]
    assert all(f or k for f, k in zip(flipped, kept, strict=True)) and any(flipped) and any(kept)


def test_crop_flip_non_square_images():
    x = torch.randn(40, 1, 6, 10, generator=gen(0))
    out = Augmenter(DataConfig(augmentation="crop_flip", crop_padding=1), "image")(x, gen(1))
    assert out.shape == x.shape
    assert all(crop_of(out[i], x[i], 1) is not None for i in range(len(x)))


def test_inactive_is_identity():
    x = signals()
    none = Augmenter(DataConfig(augmentation="none"), "vector")
    assert not none.active and none(x, gen(0)) is x
    zero = Augmenter(DataConfig(augmentation="shift", max_shift=0), "signal")
    assert not zero.active and torch.equal(zero(x, gen(0)), x)
    assert SHIFT.active and CROP.active


@pytest.mark.parametrize(
    ("augmentation", "kind"), [("shift", "image"), ("shift", "vector"), ("crop_flip", "signal"), ("crop_flip", "vector")]
)
def test_wrong_kind_is_refused(augmentation, kind):
    with pytest.raises(ValueError, match=f"{augmentation}.*needs"):
        Augmenter(DataConfig(augmentation=augmentation), kind)


def test_bad_kind_and_bad_batch_shape():
    with pytest.raises(ValueError, match="unknown data kind"):
        Augmenter(DataConfig(), "video")
    with pytest.raises(ValueError, match=r"\(N, C, L\)"):
        SHIFT(torch.zeros(4, 40), gen(0))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        CROP(torch.zeros(4, 8, 8), gen(0))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_same_result_on_gpu():
    for aug, x in ((SHIFT, signals()), (CROP, images())):
        cpu = aug(x, gen(9))
        gpu = aug(x.cuda(), gen(9))
        assert gpu.device.type == "cuda" and torch.equal(gpu.cpu(), cpu)


def test_dsa_augmentation_follows_the_strategys_mode():
    # the paper's real-data recipe (IDC's train.py): flip and color on every batch plus one of crop, scale, rotate
    paper = Augmenter(DataConfig(augmentation="dsa", dsa_strategy=PAPER_STRATEGY), "image")
    single = Augmenter(DataConfig(augmentation="dsa", dsa_strategy="color_crop_flip_scale_rotate"), "image")
    x = images()
    assert paper.dsa is not None and paper.dsa.mode == "idc"
    assert torch.equal(paper(x, gen(3)), DSA(PAPER_STRATEGY, "image")(x, gen(3)))
    assert not torch.equal(paper(x, gen(3)), single(x, gen(3)))
    # every sample is changed: colour jitter reaches all of them, where single mode often applies a flip alone
    assert all(not torch.equal(a, b) for a, b in zip(paper(x, gen(4)), x, strict=True))


@pytest.mark.parametrize("name", [n for n in preset_names() if n.startswith("paper-cifar")])
def test_paper_presets_train_with_the_papers_augmentation_recipe(name):
    cfg = preset(name)
    assert (cfg.data.augmentation, cfg.data.dsa_strategy) == ("dsa", PAPER_STRATEGY)
    assert cfg.synthetic.augmentation == PAPER_STRATEGY
