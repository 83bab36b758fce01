"""Stacked (lockstep) training of SGD-noise copies against the one-after-the-other loop."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lmc_core.data.augment import Augmenter
from lmc_core.data.dataset import Dataset, Kind
from lmc_core.foundations.config import DataConfig, ModelConfig, TrainConfig
from lmc_core.foundations.events import Event
from lmc_core.foundations.types import Masks
from lmc_core.models import build_model
from lmc_core.prune.magnitude import prunable_names
from lmc_core.train.copies import train_copies
from lmc_core.train.loop import TrainingDiverged, TrainResult
from lmc_core.train.stacked import choose_copies_strategy, folded_plan, train_stacked

SEEDS = [(100, 100), (101, 101)]
STEPS = 50
# The generic vmap path is not bit-identical: bmm and grouped convolutions round differently from
# the loop's per-copy GEMMs (lmc_core/train/stacked.py, _exact_layer). On a smooth network (Tanh) its
# ~1-ulp gradient differences grow through the 50 steps to a measured max |diff| here of 5.9e-8 to
# 8.9e-8 (SGD) and 1.5e-8 (Adam) at 1, 2, 3, 4 and 8 threads; the bound leaves 10x headroom. Over a full
# chaotic run they grow much further, which is why auto never picks vmap.
# The comparison needs a smooth network: with ReLU, a pre-activation that lands within an ulp of 0 is
# exactly 0.0 on one path and 3.7e-9 on the other, that example's gradient through the unit switches
# on or off, and Adam's normalised step turns the changed gradient into a different lr-sized update
# (the ReLU MLP: 6.3e-5 at 1, 3, 4 and 8 threads, 3e-8 at 2), a kink rather than rounding growth.
VMAP_ATOL = 1e-6

SGD = dict(optimizer="sgd", lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
ADAM = dict(optimizer="adam", lr=1e-3, weight_decay=1e-4)


class Wrapped(nn.Module):
    """A model whose forward train_stacked cannot know, so it takes the generic vmap path."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)


def synthetic(shape: tuple[int, ...], kind: Kind, n: int = 640, classes: int = 10) -> Dataset:
    """Return a learnable random dataset (noisy class prototypes): 20 steps per epoch at batch 32."""
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, classes, (n + 100,), generator=g)
    prototypes = torch.randn(classes, *shape, generator=g)
    x = prototypes[y] + 0.5 * torch.randn(n + 100, *shape, generator=g)
    return Dataset("synthetic", x[:n], y[:n], x[n:], y[n:], classes, kind)


SIGNALS = synthetic((1, 40), "signal"), Augmenter(DataConfig(augmentation="shift", max_shift=3), "signal")
IMAGES = synthetic((1, 8, 8), "image"), Augmenter(DataConfig(augmentation="crop_flip", crop_padding=1), "image")
DATA, AUGMENTER = SIGNALS


def odd_sequential() -> nn.Module:
    """Return an nn.Sequential using every kind of folded step: bias-free conv and linears, per-copy Tanh and pooling, nesting."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return nn.Sequential(
            nn.Conv1d(1, 8, 5, padding=2, bias=False),
            nn.Tanh(),
            nn.AvgPool1d(2),
            nn.Flatten(),
            nn.Sequential(nn.Linear(160, 32, bias=False), nn.LeakyReLU(0.1)),
            nn.Linear(32, 10),
        )


def smooth_mlp() -> nn.Module:
    """Return an MLP with the ReLU MLP's shape but Tanh activations: its gradient is continuous in the weights."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return nn.Sequential(nn.Flatten(), nn.Linear(40, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 10))


def make_model(kind: str) -> nn.Module:
    """Return a fresh model; all but the "-vmap" kinds run on the folded, bit-identical path."""
    if kind == "conv1d":
        return build_model(ModelConfig(arch="convnet", depth=2, width=16, kernel_size=5, stride=2), (1, 40), 10, seed=0)
    if kind == "conv2d":
        return build_model(ModelConfig(arch="convnet", depth=2, width=8, kernel_size=3, pooling="max"), (1, 8, 8), 10, seed=0)
    if kind == "sequential":
        return odd_sequential()
    if kind == "tanh-vmap":
        return Wrapped(smooth_mlp())
    mlp = build_model(ModelConfig(arch="mlp", hidden=[64, 64]), (1, 40), 10, seed=0)
    return Wrapped(mlp) if kind == "mlp-vmap" else mlp


def half_masks(model: nn.Module) -> Masks:
    """Return random masks that prune about half of every prunable weight."""
    g = torch.Generator().manual_seed(1)
    params = dict(model.named_parameters())
    return {n: torch.rand(params[n].shape, generator=g) < 0.5 for n in prunable_names(model)}


def config(opt: dict, steps: int = STEPS) -> TrainConfig:
    return TrainConfig(steps=steps, batch_size=32, schedule="cosine", warmup_steps=5, **opt)


def max_diff(a: list[TrainResult], b: list[TrainResult]) -> float:
    return max(float((ra.state[k] - rb.state[k]).abs().max()) for ra, rb in zip(a, b, strict=True) for k in ra.state)


def assert_bit_identical(a: list[TrainResult], b: list[TrainResult]) -> None:
    assert len(a) == len(b)
    for ra, rb in zip(a, b, strict=True):
        assert list(ra.state) == list(rb.state)
        for k in ra.state:
            assert ra.state[k].dtype == rb.state[k].dtype and ra.state[k].device.type == rb.state[k].device.type == "cpu"
            assert torch.equal(ra.state[k], rb.state[k]), k
        assert ra.history == rb.history
        assert (ra.start_step, ra.end_step, ra.examples) == (rb.start_step, rb.end_step, rb.examples)


@pytest.mark.parametrize("kind", ["mlp", "conv1d", "conv2d", "sequential"])
@pytest.mark.parametrize("opt", [SGD, ADAM], ids=["sgd-nesterov-wd", "adam-wd"])
def test_stacked_is_bit_identical_to_the_loop(kind: str, opt: dict) -> None:
    model = make_model(kind)
    assert folded_plan(model) is not None
    data, augmenter = IMAGES if kind == "conv2d" else SIGNALS
    masks = half_masks(model)
    cfg = config(opt)
    loop = train_copies(model, data, cfg, augmenter, seeds=SEEDS, masks=masks, strategy="loop")
    stacked = train_copies(model, data, cfg, augmenter, seeds=SEEDS, masks=masks, strategy="stacked")
    assert_bit_identical(stacked, loop)
    for result in stacked:
        assert (result.start_step, result.end_step, result.examples) == (0, STEPS, STEPS * 32)
        assert [row["step"] for row in result.history] == [20, 40, 50]
        for name, mask in masks.items():
            assert not result.state[name][~mask].any()  # pruned weights exactly zero
    # The copies really differ (two SGD-noise streams).
    assert max_diff(stacked[:1], stacked[1:]) > 1e-3


def test_stacked_keeps_the_partial_last_batch_like_the_loop() -> None:
    """640 examples in batches of 48: 13 full batches and one of 16 per epoch, in both paths, counted exactly."""
    model = make_model("mlp")
    masks = half_masks(model)
    cfg = TrainConfig(epochs=2, batch_size=48, schedule="cosine", **SGD)
    loop = train_copies(model, DATA, cfg, AUGMENTER, seeds=SEEDS, masks=masks, strategy="loop")
    stacked = train_copies(model, DATA, cfg, AUGMENTER, seeds=SEEDS, masks=masks, strategy="stacked")
    assert_bit_identical(stacked, loop)
    for result in stacked:
        assert (result.end_step, result.examples) == (2 * 14, 2 * 640)
        assert [row["step"] for row in result.history] == [14, 28]


@pytest.mark.parametrize("opt", [SGD, ADAM], ids=["sgd-nesterov-wd", "adam-wd"])
def test_vmap_path_matches_the_loop_to_rounding(opt: dict) -> None:
    model = make_model("tanh-vmap")  # smooth: see VMAP_ATOL
    assert folded_plan(model) is None
    masks = half_masks(model)
    cfg = config(opt)
    loop = train_copies(model, DATA, cfg, AUGMENTER, seeds=SEEDS, masks=masks, strategy="loop")
    stacked = train_stacked(model, DATA, cfg, AUGMENTER, seeds=SEEDS, masks=masks)
    # Batched matmuls may sum in another order than the loop's (not bit-exact on every CPU: on some it is exact),
    # so rounding is all that is allowed between them.
    assert max_diff(loop, stacked) <= VMAP_ATOL
    for lr, sr in zip(loop, stacked, strict=True):
        assert list(sr.state) == list(lr.state)
        assert [(r["step"], r["lr"]) for r in sr.history] == [(r["step"], r["lr"]) for r in lr.history]
        assert [r["train_loss"] for r in sr.history] == pytest.approx([r["train_loss"] for r in lr.history], rel=1e-6)
        assert sr.examples == lr.examples
        for name, mask in masks.items():
            assert not sr.state[name][~mask].any()


def test_same_seeds_twice_are_bit_identical() -> None:
    for kind in ("mlp", "mlp-vmap"):
        model = make_model(kind)
        masks = half_masks(model)
        cfg = config(SGD, steps=30)
        first = train_stacked(model, DATA, cfg, AUGMENTER, seeds=SEEDS, masks=masks)
        second = train_stacked(model, DATA, cfg, AUGMENTER, seeds=SEEDS, masks=masks)
        assert_bit_identical(first, second)


def test_late_start_four_copies_and_model_untouched() -> None:
    model = make_model("mlp").eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    seeds = [(1, 2), (3, 4), (5, 6), (7, 8)]
    cfg = config(SGD)
    loop = train_copies(model, DATA, cfg, AUGMENTER, seeds=seeds, start_step=10, end_step=35)
    stacked = train_stacked(model, DATA, cfg, AUGMENTER, seeds=seeds, start_step=10, end_step=35)
    assert_bit_identical(stacked, loop)
    assert [(r.start_step, r.end_step, r.examples) for r in stacked] == [(10, 35, 25 * 32)] * 4
    assert [[row["step"] for row in r.history] for r in stacked] == [[30, 35]] * 4
    assert not model.training and all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_events_match_the_loop() -> None:
    model = make_model("mlp")
    cfg = config(SGD)
    seen: dict[str, list[Event]] = {"loop": [], "stacked": []}
    for strategy, events in seen.items():
        train_copies(model, DATA, cfg, AUGMENTER, seeds=SEEDS, strategy=strategy, stage="copies", callback=events.append)
    # The same events per copy, once at the start and once per epoch; stacked interleaves the copies.
    key = lambda e: (e.stage, e.step, e.total)  # noqa: E731
    assert sorted(map(key, seen["stacked"])) == sorted(map(key, seen["loop"]))
    assert [key(e) for e in seen["stacked"][:4]] == [
        ("copies[0]", 0, 50),
        ("copies[1]", 0, 50),
        ("copies[0]", 20, 50),
        ("copies[1]", 20, 50),
    ]


def test_divergence_names_the_copy_and_step() -> None:
    model = make_model("mlp")
    cfg = TrainConfig(steps=40, lr=1e4, momentum=0.9, schedule="constant")
    with pytest.raises(TrainingDiverged) as loop_err:
        train_copies(model, DATA, cfg, AUGMENTER, seeds=SEEDS, strategy="loop", stage="copies")
    with pytest.raises(TrainingDiverged) as stacked_err:
        train_stacked(model, DATA, cfg, AUGMENTER, seeds=SEEDS, stage="copies")
    assert stacked_err.value.stage == loop_err.value.stage == "copies[0]"
    assert stacked_err.value.step == loop_err.value.step


def test_batchnorm_is_refused_and_auto_falls_back_to_the_loop() -> None:
    model = build_model(ModelConfig(arch="convnet", depth=1, width=8, kernel_size=5, stride=2, norm="batch"), (1, 40), 10, seed=0)
    cfg = config(SGD, steps=25)
    with pytest.raises(ValueError, match="BatchNorm1d"):
        train_stacked(model, DATA, cfg, AUGMENTER, seeds=SEEDS)
    with pytest.raises(ValueError, match="BatchNorm1d"):
        train_copies(model, DATA, cfg, AUGMENTER, seeds=SEEDS, strategy="stacked")
    assert choose_copies_strategy(model, 2) == "loop"
    auto = train_copies(model, DATA, cfg, AUGMENTER, seeds=SEEDS, strategy="auto")
    loop = train_copies(model, DATA, cfg, AUGMENTER, seeds=SEEDS, strategy="loop")
    assert_bit_identical(auto, loop)


def test_auto_rule_and_auto_equals_loop() -> None:
    mlp, conv1d, conv2d = make_model("mlp"), make_model("conv1d"), make_model("conv2d")
    grouped = build_model(ModelConfig(arch="convnet", depth=1, width=8, norm="group"), (1, 40), 10, seed=0)
    for model in (mlp, conv1d, make_model("sequential")):
        assert choose_copies_strategy(model, 2) == choose_copies_strategy(model, 4) == "stacked"
        assert choose_copies_strategy(model, 1) == "loop"
    assert choose_copies_strategy(conv2d, 2) == "loop"  # exact too, but not measured faster
    # Unknown forwards and layers with parameters other than Linear/Conv would run through vmap:
    # slower for the MLP and not bit-identical, so auto keeps the loop.
    assert choose_copies_strategy(Wrapped(mlp), 2) == "loop"
    assert choose_copies_strategy(grouped, 2) == "loop" and folded_plan(grouped) is None
    cfg = config(SGD, steps=25)
    auto = train_copies(conv1d, DATA, cfg, AUGMENTER, seeds=SEEDS, strategy="auto")
    loop = train_copies(conv1d, DATA, cfg, AUGMENTER, seeds=SEEDS, strategy="loop")
    assert_bit_identical(auto, loop)
    with pytest.raises(ValueError, match="unknown strategy"):
        train_copies(mlp, DATA, cfg, AUGMENTER, seeds=SEEDS, strategy="vmap")


def test_folded_plan_refuses_what_it_cannot_reproduce() -> None:
    tied = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4))
    tied[2].weight = tied[0].weight
    frozen = nn.Sequential(nn.Linear(4, 4))
    frozen[0].bias.requires_grad_(False)
    dropout = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5))
    for model in (tied, frozen, dropout, nn.Sequential(nn.Conv1d(1, 2, 3, padding="same"))):
        assert folded_plan(model) is None
    plan = folded_plan(make_model("sequential"))
    assert plan is not None
    assert [how for how, _, _ in plan] == ["conv", "per_copy", "per_copy", "fold", "linear", "fold", "linear"]
