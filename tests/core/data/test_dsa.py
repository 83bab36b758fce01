"""Tests of lmc_core.data.dsa: exact maths of each transform, gradients through it, and randomness only from the generator."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lmc_core.data import dsa as D
from lmc_core.data.dsa import (
    DSA,
    IMAGE_STRATEGY,
    PAPER_STRATEGY,
    SIGNAL_STRATEGY,
    STRATEGIES,
    DSAParams,
    cutmix,
    resolve_strategy,
    siamese,
)

TRANSFORMS = [("image", name) for name in STRATEGIES["image"]] + [("signal", name) for name in STRATEGIES["signal"]]


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def batch(kind: str, n: int = 16, dtype: torch.dtype = torch.float32, seed: int = 99) -> torch.Tensor:
    shape = (n, 3, 8, 8) if kind == "image" else (n, 2, 24)
    return torch.randn(shape, generator=gen(seed), dtype=dtype)


# ---- randomness: only the generator, and all of it ----


@pytest.mark.parametrize("kind,name", TRANSFORMS)
def test_each_transform_is_a_function_of_the_seed(kind, name):
    aug, x = DSA(name, kind, mode="all"), batch(kind)
    assert torch.equal(aug(x, gen(1)), aug(x, gen(1)))
    assert not torch.equal(aug(x, gen(1)), aug(x, gen(2)))
    assert not torch.equal(aug(x, gen(1)), x)


@pytest.mark.parametrize("kind,strategy", [("image", IMAGE_STRATEGY), ("signal", SIGNAL_STRATEGY)])
def test_single_mode_picks_one_transform_per_call_from_the_generator(kind, strategy):
    single, x = DSA(strategy, kind), batch(kind)
    assert torch.equal(single(x, gen(5)), single(x, gen(5)))
    assert not torch.equal(single(x, gen(5)), single(x, gen(6)))
    # Replaying the documented draws: the pick, then one uniform matrix feeding only the picked transform.
    picked = set()
    for seed in range(12):
        g = gen(seed)
        name = single.names[int(torch.randint(len(single.names), (1,), generator=g))]
        picked.add(name)
        assert torch.equal(single(x, gen(seed)), DSA(name, kind, mode="all")(x, g))
    assert len(picked) > 1


# ---- IDC's recipe (mode "idc"): flip and color every call, one drawn transform, then cutout ----


def _recording(monkeypatch) -> list[list[str]]:
    """Wrap every primitive so each call of a DSA records the primitives it applied, in order."""
    calls: list[list[str]] = []
    for name, prim in list(D._PRIMITIVES.items()):

        def apply(x, p, _name=name, _apply=prim.apply):
            calls[-1].append(_name)
            return _apply(x, p)

        monkeypatch.setitem(D._PRIMITIVES, name, D._Primitive(prim.draws, prim.draw, apply))
    return calls


def test_idc_recipe_applies_flip_and_color_every_call_and_exactly_one_geometric_transform(monkeypatch):
    # IDC's DiffAug (misc/augment.py, single_aug=True): flip, then brightness/saturation/contrast, then one of the
    # remaining transforms drawn per call; the paper's strategy leaves crop, scale and rotate in that pool.
    calls = _recording(monkeypatch)
    aug, x = DSA(PAPER_STRATEGY, "image"), batch("image")
    assert aug.mode == "idc" and aug.strategy == "color_crop_flip_scale_rotate"
    for seed in range(90):
        calls.append([])
        aug(x, gen(seed))
    every = ["flip", "brightness", "saturation", "contrast"]
    assert all(c[:4] == every and len(c) == 5 and c[4] in ("crop", "scale", "rotate") for c in calls), calls[:3]
    counts = {name: sum(c[4] == name for c in calls) for name in ("crop", "scale", "rotate")}
    assert all(n >= 15 for n in counts.values()), f"the geometric transform is drawn uniformly: {counts}"
    # single mode, on the same names, applies one transform per call, flip and color included
    calls.clear()
    for seed in range(30):
        calls.append([])
        DSA("color_crop_flip_scale_rotate", "image")(x, gen(seed))
    assert any("flip" not in c for c in calls) and all(len(c) in (1, 3) for c in calls)


def test_idc_recipe_puts_cutout_after_the_drawn_transform(monkeypatch):
    calls = _recording(monkeypatch)
    aug, x = DSA("idc:cutout_crop_color", "image"), batch("image")
    for seed in range(5):
        calls.append([])
        aug(x, gen(seed))
    assert calls == [["brightness", "saturation", "contrast", "crop", "cutout"]] * 5, "IDC's matching strategy color_crop_cutout"


@pytest.mark.parametrize("strategy", [PAPER_STRATEGY, "idc:rotate_flip_scale_color_crop"])
def test_idc_recipe_replays_from_its_documented_draws(strategy):
    # the pick (randint over the pool, in strategy order), then one uniform matrix for flip, color and the pick
    aug, x = DSA(strategy, "image"), batch("image")
    pool = [n for n in aug.names if n not in ("flip", "color", "cutout")]
    picked = set()
    for seed in range(10):
        g = gen(seed)
        name = pool[int(torch.randint(len(pool), (1,), generator=g))]
        picked.add(name)
        assert torch.equal(aug(x, gen(seed)), DSA(f"flip_color_{name}", "image", mode="all")(x, g))
    assert len(picked) > 1


def test_idc_recipe_is_siamese_when_shared():
    aug = DSA("idc:color_crop_cutout", "image")
    img = torch.rand(1, 3, 8, 8)
    real = aug(img.expand(5, -1, -1, -1).clone(), gen(3), shared=True)
    syn = aug(img.expand(2, -1, -1, -1).clone(), gen(3), shared=True)
    assert all(torch.equal(real[0], r) for r in real) and torch.equal(real[0], syn[0])
    assert not torch.equal(real[0], img[0])


def test_strategy_prefix_names_the_mode():
    x = batch("image")
    assert torch.equal(DSA("all:flip_crop", "image")(x, gen(1)), DSA("flip_crop", "image", mode="all")(x, gen(1)))
    assert DSA("flip_crop", "image").mode == "single" and DSA("idc:flip", "image", mode="idc").mode == "idc"
    assert resolve_strategy("idc:auto", "image") == "idc:" + IMAGE_STRATEGY
    assert resolve_strategy("idc:auto", "vector") == "none"
    assert resolve_strategy(PAPER_STRATEGY, "image") == PAPER_STRATEGY
    # signals have no flip or color: IDC's recipe draws one of shift and scale per call
    assert DSA("idc:shift_scale", "signal")(batch("signal"), gen(2)).shape == batch("signal").shape
    with pytest.raises(ValueError, match=r"mode 'paper'.*'idc:color_crop_flip_scale_rotate'"):
        DSA("paper:flip", "image")
    with pytest.raises(ValueError, match="contradicts mode='all'"):
        DSA("idc:flip", "image", mode="all")


def test_draws_leave_the_global_generators_alone():
    torch_state, np_state = torch.get_rng_state(), np.random.get_state()[1].copy()
    DSA(IMAGE_STRATEGY, "image", mode="all")(batch("image"), gen(0))
    cutmix(batch("image"), torch.arange(16), gen(0), beta=0.5)
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert np.array_equal(np.random.get_state()[1], np_state)


# ---- gradients ----


@pytest.mark.parametrize("kind,name", TRANSFORMS)
def test_gradients_flow_through_each_transform(kind, name):
    aug = DSA(name, kind, DSAParams(flip=0.5), mode="all")
    x = batch(kind, n=2, dtype=torch.float64)[:, :2, ..., :5]
    x = (x[:, :, :5] if kind == "image" else x).clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda inp: aug(inp, gen(3)), (x,))
    weights = torch.randn(aug(x, gen(3)).shape, generator=gen(4), dtype=torch.float64)
    (aug(x, gen(3)) * weights).sum().backward()
    assert x.grad.abs().sum() > 0


def test_gradients_flow_through_the_full_strategy_and_cutmix():
    x = batch("image", n=3, dtype=torch.float64)[:, :2, :4, :4].clone().requires_grad_(True)
    aug = DSA(IMAGE_STRATEGY, "image", mode="all")
    assert torch.autograd.gradcheck(lambda inp: aug(inp, gen(8)), (x,))
    assert torch.autograd.gradcheck(lambda inp: cutmix(inp, torch.arange(3), gen(8))[0], (x,))


# ---- siamese ----


def test_siamese_copies_apply_the_same_transform_to_different_batches():
    g = gen(11)
    twin = siamese(g)
    flip = DSA("flip", "image", DSAParams(flip=1.0))
    real, syn = batch("image", seed=1), batch("image", seed=2)
    assert torch.equal(flip(real, g), real.flip(-1))
    assert torch.equal(flip(syn, twin), syn.flip(-1))

    g = gen(12)
    twin = siamese(g)
    crop = DSA("crop", "image")
    assert torch.equal(crop(real, g), crop(real, twin))
    assert not torch.equal(crop(real, g), crop(real, twin.manual_seed(13)))


def test_siamese_copy_leaves_the_original_where_it_was():
    g = gen(21)
    torch.rand(3, generator=g)
    twin = siamese(g)
    assert torch.equal(torch.rand(5, generator=g), torch.rand(5, generator=twin))


@pytest.mark.parametrize("kind,strategy", [("image", IMAGE_STRATEGY), ("signal", SIGNAL_STRATEGY)])
def test_sample_i_gets_the_same_transform_in_batches_of_different_sizes(kind, strategy):
    aug = DSA(strategy, kind, mode="all")
    real = batch(kind, n=20)
    syn = real[:3].clone()  # a smaller synthetic batch whose samples equal the first real ones
    assert torch.equal(aug(real, gen(31))[:3], aug(syn, gen(31)))


# ---- exact maths ----


def test_flip_with_probability_one_is_torch_flip():
    x = batch("image")
    assert torch.equal(DSA("flip", "image", DSAParams(flip=1.0))(x, gen(0)), torch.flip(x, [-1]))
    assert torch.equal(DSA("flip", "image", DSAParams(flip=0.0))(x, gen(0)), x)


@pytest.mark.parametrize("kind,strategy", [("image", "crop_scale_rotate"), ("signal", "scale")])
def test_geometry_with_identity_parameters_gives_back_the_input(kind, strategy):
    x = batch(kind)
    out = DSA(strategy, kind, DSAParams(scale=1.0, rotate=0.0, crop=0.0), mode="all")(x, gen(0))
    assert torch.allclose(out, x, atol=1e-6)


def test_rotate_by_quarter_turns_matches_rot90():
    x = batch("image", n=2, dtype=torch.float64)
    angles = torch.full((2,), 90.0, dtype=torch.float64)
    assert torch.allclose(D._rotate(x, angles), torch.rot90(x, -1, dims=(-2, -1)), atol=1e-6)
    assert torch.allclose(D._rotate(x, -angles), torch.rot90(x, 1, dims=(-2, -1)), atol=1e-6)
    wide = torch.randn(2, 1, 4, 10, generator=gen(1), dtype=torch.float64)
    assert torch.allclose(D._rotate(wide, 2 * angles), wide.flip(-1, -2), atol=1e-6)


def test_rotate_keeps_a_non_square_picture_unsheared():
    # A centred horizontal bar in a wide image, turned 90 degrees, becomes a centred vertical bar.
    wide = torch.zeros(1, 1, 9, 15, dtype=torch.float64)
    wide[0, 0, 4, 5:10] = 1.0
    out = D._rotate(wide, torch.tensor([90.0], dtype=torch.float64))[0, 0]
    expected = torch.zeros(9, 15, dtype=torch.float64)
    expected[2:7, 7] = 1.0
    assert torch.allclose(out, expected, atol=1e-6)


def test_scale_stretches_a_signal_about_its_centre():
    # Bilinear sampling is exact on a ramp: out[j] = c + s * (j - c) with c the centre, for in-range j.
    length = 11
    ramp = torch.arange(length, dtype=torch.float64).view(1, 1, length)
    factors = torch.tensor([[0.5, 1.0]], dtype=torch.float64)
    centre = (length - 1) / 2
    expected = centre + 0.5 * (torch.arange(length, dtype=torch.float64) - centre)
    assert torch.allclose(D._scale(ramp, factors)[0, 0], expected, atol=1e-12)


def test_image_scale_factors_act_per_axis():
    x = torch.arange(7, dtype=torch.float64).expand(1, 1, 7, 7)  # each row is a ramp along the width
    out = D._scale(x, torch.tensor([[0.5, 1.0]], dtype=torch.float64))[0, 0]
    expected = 3 + 0.5 * (torch.arange(7, dtype=torch.float64) - 3)
    assert torch.allclose(out, expected.expand(7, 7), atol=1e-12)


def test_scale_and_rotate_draw_their_published_ranges_per_sample():
    x, p = batch("image", dtype=torch.float64), DSAParams()
    u = torch.rand(16, 2, generator=gen(6), dtype=torch.float64)
    factors = 1 / p.scale + u * (p.scale - 1 / p.scale)  # per axis, uniform in [1/1.2, 1.2]
    assert torch.equal(DSA("scale", "image", mode="all")(x, gen(6)), D._scale(x, factors))
    degrees = (2 * torch.rand(16, generator=gen(6), dtype=torch.float64) - 1) * p.rotate  # uniform in [-15, 15]
    assert torch.equal(DSA("rotate", "image", mode="all")(x, gen(6)), D._rotate(x, degrees))


def test_crop_is_a_whole_pixel_shift_with_zero_fill_within_the_range():
    x = batch("image", n=32) + 10.0  # no zeros in the input, so the zero fill is visible
    params = DSAParams(crop=0.25)
    out = DSA("crop", "image", params)(x, gen(7))
    limit = round(8 * params.crop)
    padded = F.pad(x, (limit, limit, limit, limit))
    seen = set()
    for i in range(len(x)):
        matches = [
            (dy, dx)
            for dy in range(-limit, limit + 1)
            for dx in range(-limit, limit + 1)
            if torch.equal(out[i], padded[i, :, limit - dy : limit - dy + 8, limit - dx : limit - dx + 8])
        ]
        assert len(matches) == 1
        seen.add(matches[0])
    assert len(seen) > 5


def test_cutout_zeroes_exactly_a_box_of_the_stated_side():
    ones = torch.ones(40, 2, 8, 12)
    out = DSA("cutout", "image", DSAParams(cutout=0.5))(ones, gen(3))
    corners = set()
    for sample in out:
        assert torch.equal(sample[0], sample[1])  # the same box in every channel
        rows, cols = torch.nonzero(sample[0] == 0, as_tuple=True)
        assert len(rows) == 4 * 6
        assert (rows.max() - rows.min() + 1, cols.max() - cols.min() + 1) == (4, 6)
        assert torch.all(sample[sample != 0] == 1)
        corners.add((int(rows.min()), int(cols.min())))
    assert len(corners) > 10


def test_brightness_shifts_each_sample_mean_by_the_drawn_amount():
    x = torch.randn(16, 1, 6, 6, generator=gen(0))  # one channel: saturation and contrast keep the mean
    params = DSAParams(brightness=0.8)
    out = DSA("color", "image", params, mode="all")(x, gen(4))
    draws = torch.rand(16, 3, generator=gen(4), dtype=torch.float64)  # the documented draw: columns in order
    expected = ((draws[:, 0] - 0.5) * params.brightness).float()
    assert torch.allclose(out.mean(dim=(1, 2, 3)) - x.mean(dim=(1, 2, 3)), expected, atol=1e-5)
    assert expected.abs().max() <= 0.4 and expected.std() > 0.05
    delta = torch.linspace(-0.5, 0.5, 16)
    assert torch.allclose(D._brightness(x, delta) - x, delta.view(-1, 1, 1, 1).expand_as(x), atol=1e-6)


def test_saturation_and_contrast_keep_their_means_and_reach_grey_and_flat():
    x = batch("image", n=4, dtype=torch.float64)
    zero, two = torch.zeros(4, dtype=torch.float64), torch.full((4,), 2.0, dtype=torch.float64)
    grey = D._saturation(x, zero)
    assert torch.allclose(grey, x.mean(dim=1, keepdim=True).expand_as(x))
    assert torch.allclose(D._saturation(x, two).mean(dim=1), x.mean(dim=1))
    flat = D._contrast(x, zero)
    assert torch.allclose(flat, x.mean(dim=(1, 2, 3), keepdim=True).expand_as(x))
    assert torch.allclose(D._contrast(x, two) - x, x - x.mean(dim=(1, 2, 3), keepdim=True))


def test_signal_shift_is_a_circular_roll_within_the_range():
    x = batch("signal", n=32)
    params = DSAParams(shift=0.125)
    out = DSA("shift", "signal", params)(x, gen(9))
    limit = round(24 * params.shift)
    rolls = set()
    for i in range(len(x)):
        assert torch.equal(out[i].sort(dim=-1).values, x[i].sort(dim=-1).values)
        matches = [s for s in range(-limit, limit + 1) if torch.equal(out[i], torch.roll(x[i], s, dims=-1))]
        assert len(matches) == 1
        rolls.add(matches[0])
    assert len(rolls) > 3


def test_inactive_strategy_returns_the_input_and_draws_nothing():
    x = batch("image")
    g = gen(0)
    for strategy in ("none", ""):
        aug = DSA(strategy, "image")
        assert not aug.active and aug(x, g) is x
    assert DSA("none", "vector")(torch.zeros(3, 5), g) is not None
    assert torch.equal(torch.rand(4, generator=g), torch.rand(4, generator=gen(0)))


def test_resolve_strategy_expands_auto_per_kind():
    assert resolve_strategy("auto", "image") == IMAGE_STRATEGY
    assert resolve_strategy("auto", "signal") == SIGNAL_STRATEGY
    assert resolve_strategy("auto", "vector") == "none"
    assert resolve_strategy("flip", "image") == "flip"
    assert "color_crop" in repr(DSA("color_crop", "image"))


# ---- cutmix ----


@pytest.mark.parametrize("kind,beta", [("image", 1.0), ("image", 0.4), ("signal", 1.0), ("signal", 2.0)])
def test_cutmix_lam_is_the_share_of_the_input_left_in_place(kind, beta):
    n = 10
    shape = (n, 2, 9, 13) if kind == "image" else (n, 2, 50)
    x = torch.arange(n, dtype=torch.float32).view(-1, *[1] * (len(shape) - 1)).expand(shape).clone()
    y = torch.arange(n) * 7
    lams = []
    for seed in range(8):
        mixed, y_a, y_b, lam = cutmix(x, y, gen(seed), beta=beta)
        assert isinstance(lam, float) and 0.0 <= lam <= 1.0
        assert torch.equal(y_a, y)
        perm = y_b // 7
        assert sorted(perm.tolist()) == list(range(n))
        pasted = mixed != x
        assert torch.all(mixed[pasted] == perm.view(-1, *[1] * (len(shape) - 1)).expand(shape).float()[pasted])
        moved = perm != torch.arange(n)
        share = pasted[moved].float().mean(dim=tuple(range(1, len(shape))))
        assert torch.allclose(share, torch.full_like(share, 1 - lam), atol=1e-6)
        assert torch.equal(pasted[moved], pasted[moved][:1].expand_as(pasted[moved]))  # one box for the batch
        lams.append(lam)
        again = cutmix(x, y, gen(seed), beta=beta)
        assert torch.equal(again[0], mixed) and torch.equal(again[2], y_b) and again[3] == lam
    assert len(set(lams)) > 1


def test_cutmix_pastes_one_rectangle_clipped_at_the_border():
    n = 6
    x = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 1, 16, 16).clone()
    clipped = 0
    for seed in range(30):
        mixed, _, y_b, lam = cutmix(x, torch.arange(n), gen(seed))
        i = int(torch.nonzero(y_b != torch.arange(n))[0])
        rows, cols = torch.nonzero(mixed[i, 0] != x[i, 0], as_tuple=True)
        if len(rows) == 0:
            assert lam == 1.0
            continue
        height, width = int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)
        assert height * width == len(rows) == round((1 - lam) * 256)
        clipped += height != width  # a box that hit the border; unclipped boxes are square here
    assert clipped > 0


# ---- bad input ----


def test_bad_strategies_and_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="valid names: color, crop, cutout, flip, scale, rotate"):
        DSA("color_blur", "image")
    with pytest.raises(ValueError, match="'rotate' is not valid for signal data; valid names: shift, scale"):
        DSA("shift_rotate", "signal")
    with pytest.raises(ValueError, match="vectors take no augmentation"):
        DSA("scale", "vector")
    with pytest.raises(ValueError, match="unknown data kind"):
        DSA("flip", "images")
    with pytest.raises(ValueError, match="'single'"):
        DSA("flip", "image", mode="S")
    with pytest.raises(ValueError, match="twice"):
        DSA("flip_flip", "image")
    with pytest.raises(ValueError, match=r"image data expects a batch of shape \(N, C, H, W\), got \(4, 3, 8\)"):
        DSA("flip", "image")(torch.zeros(4, 3, 8), gen(0))
    with pytest.raises(ValueError, match=r"signal data expects a batch of shape \(N, C, L\)"):
        DSA("shift", "signal")(torch.zeros(4, 8), gen(0))
    with pytest.raises(ValueError, match=r"images .* or signals"):
        cutmix(torch.zeros(4, 8), torch.zeros(4, dtype=torch.long), gen(0))
    with pytest.raises(ValueError, match="one label per sample"):
        cutmix(torch.zeros(4, 1, 8), torch.zeros(3, dtype=torch.long), gen(0))
    with pytest.raises(ValueError, match="beta > 0"):
        cutmix(torch.zeros(4, 1, 8), torch.zeros(4, dtype=torch.long), gen(0), beta=0.0)
    with pytest.raises(ValueError, match=r"DSAParams\.flip"):
        DSAParams(flip=1.5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_generator_is_refused_and_cuda_batches_match_cpu():
    cuda_gen = torch.Generator(device="cuda")
    with pytest.raises(ValueError, match=r"CPU torch\.Generator"):
        DSA("flip", "image")(batch("image"), cuda_gen)
    with pytest.raises(ValueError, match=r"CPU torch\.Generator"):
        cutmix(batch("image"), torch.arange(16), cuda_gen)
    with pytest.raises(ValueError, match=r"CPU torch\.Generator"):
        siamese(cuda_gen)
    x = batch("image", dtype=torch.float64)
    aug = DSA(IMAGE_STRATEGY, "image", mode="all")
    assert torch.allclose(aug(x.cuda(), gen(2)).cpu(), aug(x, gen(2)), atol=1e-9)
    mixed_gpu, _, _, lam_gpu = cutmix(x.cuda(), torch.arange(16).cuda(), gen(2))
    mixed_cpu, _, _, lam_cpu = cutmix(x, torch.arange(16), gen(2))
    assert lam_gpu == lam_cpu and torch.equal(mixed_gpu.cpu(), mixed_cpu)


def test_shared_draws_give_every_sample_and_both_batches_one_transform():
    dsa = DSA(IMAGE_STRATEGY, "image", mode="all")
    img = torch.rand(1, 3, 8, 8)
    real = dsa(img.expand(5, -1, -1, -1).clone(), torch.Generator().manual_seed(3), shared=True)
    syn = dsa(img.expand(2, -1, -1, -1).clone(), torch.Generator().manual_seed(3), shared=True)
    assert all(torch.equal(real[0], r) for r in real) and torch.equal(real[0], syn[0])
    unshared = dsa(img.expand(5, -1, -1, -1).clone(), torch.Generator().manual_seed(3))
    assert not all(torch.equal(unshared[0], r) for r in unshared)
