"""The fused conv-net surface path (lmc_core.landscape.fused_chain via PlaneEvaluator): equal to the module, one point at a time."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

import lmc_core.landscape.evaluator as pe
import lmc_core.landscape.fused_chain as fc
from lmc_core.foundations import heap
from lmc_core.foundations.config import ModelConfig
from lmc_core.landscape.grid import grid_axis
from lmc_core.landscape.plane import four_solution_plane, random_plane
from lmc_core.landscape.surface import SurfaceOptions, evaluate_surface
from lmc_core.models import build_model
from lmc_core.prune.magnitude import dense_masks, magnitude_prune
from lmc_core.train.evaluation import evaluate
from test_landscape import assert_unchanged, data, fingerprint, naive_surface, state_of

pytestmark = pytest.mark.skipif(fc._CONV_RELU is None, reason="torch built without oneDNN: the fused path is never used")


def bn_convnet(seed: int = 0, pooling: str = "avg", depth: int = 2) -> nn.Module:
    cfg = ModelConfig(arch="convnet", depth=depth, width=4, norm="batch", pooling=pooling)
    model = build_model(cfg, (2, 8, 8), 4, seed=seed)
    g = torch.Generator().manual_seed(100 + seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):  # statistics and affine parameters far from their defaults
                assert m.running_mean is not None and m.running_var is not None
                m.running_mean.uniform_(-1, 1, generator=g)
                m.running_var.uniform_(0.3, 3, generator=g)
                m.weight.uniform_(0.5, 1.5, generator=g)
                m.bias.uniform_(-0.5, 0.5, generator=g)
    model.eval()
    return model


def rel(a, b) -> float:
    return float(np.max(np.abs(a - b) / np.maximum(1.0, np.abs(b))))


@pytest.mark.parametrize("pooling", ["avg", "max"])
@pytest.mark.parametrize("strategy", ["loop", "batched"])
def test_fused_surface_equals_unfolded_point_at_a_time_loop(pooling, strategy):
    model = bn_convnet(pooling=pooling)
    before = fingerprint(model)
    splits = {"test": data(40, shape=(2, 8, 8), seed=3), "train": data(24, shape=(2, 8, 8), seed=4)}
    plane = random_plane(state_of(model), seed=1, ignore="none")  # bias and BatchNorm directions non-zero: folding sees them move
    xs, ys = grid_axis(1.0, 5), grid_axis(0.5, 3)
    surf = evaluate_surface(model, plane, xs, ys, splits, SurfaceOptions(bn_mode="endpoint", strategy=strategy, batch_size=16, chunk=7))
    assert surf.info["fused"] == "on"
    nl, ne = naive_surface(model, plane, xs, ys, splits, batch_size=16)
    for s, (x, y) in splits.items():
        assert rel(surf.loss[s], nl[s]) <= 1e-6
        np.testing.assert_array_equal(surf.error[s], ne[s])
        ref = evaluate(model, x, y, 16)
        assert surf.loss[s][2, 1] == ref.loss and surf.error[s][2, 1] == ref.error  # the centre runs the module: bit-exact
    assert_unchanged(model, before)


def test_fused_matches_module_path_in_every_bn_mode():
    model = bn_convnet(seed=1)
    before = fingerprint(model)
    splits = {"test": data(32, shape=(2, 8, 8), seed=5)}
    calib = torch.randn(64, 2, 8, 8, generator=torch.Generator().manual_seed(0))
    plane = random_plane(state_of(model), seed=2, ignore="none")
    xs = grid_axis(0.8, 3)
    kw = dict(calibration=calib, bn_batches=2, bn_batch_size=32, batch_size=32)
    for strategy in ("loop", "batched"):
        for mode in ("endpoint", "reestimate"):
            fused = evaluate_surface(model, plane, xs, xs, splits, SurfaceOptions(bn_mode=mode, strategy=strategy, chunk=4, **kw))
            plain = evaluate_surface(model, plane, xs, xs, splits, SurfaceOptions(bn_mode=mode, strategy="loop", fused=False, **kw))
            assert fused.info["fused"] == "on" and plain.info["fused"] == "off"
            assert rel(fused.loss["test"], plain.loss["test"]) <= 1e-6, (strategy, mode)
            np.testing.assert_array_equal(fused.error["test"], plain.error["test"])
            assert fused.loss["test"][1, 1] == plain.loss["test"][1, 1]
    # interpolate: statistics that move with the point, on the plane through four solutions
    models = [bn_convnet(seed=s) for s in range(4)]
    plane4 = four_solution_plane(*[state_of(m) for m in models])
    xs4 = np.array([-1.0, -0.3, 0.0, 0.6, 1.0])
    fused = evaluate_surface(models[0], plane4, xs4, xs4[:3], splits, SurfaceOptions(bn_mode="interpolate", strategy="batched", chunk=5))
    plain = evaluate_surface(models[0], plane4, xs4, xs4[:3], splits, SurfaceOptions(bn_mode="interpolate", strategy="loop", fused=False))
    assert fused.info["fused"] == "on"
    assert rel(fused.loss["test"], plain.loss["test"]) <= 1e-6
    assert_unchanged(model, before)


def test_fused_masked_weights_stay_zero_after_folding():
    model = bn_convnet(seed=2)
    masks = magnitude_prune(state_of(model), dense_masks(model), 0.6)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name in masks:
                p.mul_(masks[name])
    plane = random_plane(state_of(model), masks=masks, seed=3, ignore="none")
    splits = {"test": data(16, shape=(2, 8, 8), seed=6)}
    ev = pe.PlaneEvaluator(
        model,
        plane,
        pe.EvaluatorSettings(
            masks=masks, mode="endpoint", base={k: v for k, v in model.state_dict().items() if "running" in k or "num_batches" in k}
        ),
    )
    ev.prepare(splits, 16)
    assert ev.plan_note == "on"
    prep = ev._plan_prepare([(1.0, -1.0), (0.5, 0.7), (-0.2, 0.0)])
    convs = [(s, p) for s, p in zip(ev.plan, prep, strict=True) if s.kind == "conv"]
    assert convs
    for s, (w, _) in convs:
        m = masks[f"{s.name}.weight"].repeat(3, *([1] * (w.dim() - 1)))
        assert torch.all(w[~m] == 0) and torch.all(w[m] != 0)
    surf = evaluate_surface(model, plane, [1.0, 0.5], [-1.0, 0.7], splits, SurfaceOptions(bn_mode="endpoint", strategy="batched"))
    nl, _ = naive_surface(model, plane, [1.0, 0.5], [-1.0, 0.7], splits, masks=masks)
    assert rel(surf.loss["test"], nl["test"]) <= 1e-6


def test_fused_groups_of_any_size_agree():
    model = bn_convnet(seed=3, depth=3)
    splits = {"test": data(20, shape=(2, 8, 8), seed=7)}
    plane = random_plane(state_of(model), seed=4, ignore="none")
    ev = pe.PlaneEvaluator(
        model,
        plane,
        pe.EvaluatorSettings(
            masks=None, mode="endpoint", base={k: v for k, v in model.state_dict().items() if "running" in k or "num_batches" in k}
        ),
    )
    ev.prepare(splits, 8)
    pts = [(float(a), float(b)) for a, b in np.random.default_rng(0).uniform(-1, 1, (7, 2))] + [(0.0, 0.0)]
    one = ev._evaluate_module(pts, splits, 8)
    for group in (1, 2, 3, 8):
        got = ev._evaluate_plan(pts, splits, 8, group)
        assert got[-1] == one[-1]  # the centre: the module itself
        for g, o in zip(got, one, strict=True):
            assert g["test"][0] == pytest.approx(o["test"][0], rel=1e-6)
            assert g["test"][1] == o["test"][1]


def test_fused_refuses_what_it_cannot_run():
    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(2, 2, 3, padding=1)
            self.head = nn.Linear(2 * 8 * 8, 4)

        def forward(self, x):
            return self.head(torch.flatten(x + self.conv(x), 1))

    no_stats = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4, track_running_stats=False), nn.ReLU(), nn.Flatten(), nn.Linear(256, 4)
    )
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(128, 8), nn.ReLU(), nn.Linear(8, 4))
    for model in (
        Residual(),
        no_stats,
        mlp,
        bn_convnet().double(),
        build_model(ModelConfig(arch="resnet10", norm="batch"), (2, 8, 8), 4, seed=0),
    ):
        assert fc.build(model.eval()) is None
    ok = bn_convnet()
    assert [s.kind for s in fc.build(ok)] == ["conv", "pool", "conv", "pool", "flatten", "linear"]
    # a model the plan refuses is evaluated by the module, and says so
    splits = {"test": data(8, shape=(2, 8, 8))}
    res = Residual()
    surf = evaluate_surface(res, random_plane(state_of(res), seed=0), [0.0, 1.0], [0.0], splits, SurfaceOptions(strategy="batched"))
    assert surf.info["fused"] == "off"


def test_fused_plan_switches_off_when_its_check_fails(monkeypatch):
    model = bn_convnet()
    splits = {"test": data(16, shape=(2, 8, 8), seed=8)}
    plane = random_plane(state_of(model), seed=0)
    real = fc.forward
    monkeypatch.setattr(fc, "forward", lambda *a: real(*a) + 1.0)
    surf = evaluate_surface(model, plane, [0.0, 1.0], [0.0], splits, SurfaceOptions(bn_mode="endpoint", strategy="loop"))
    assert surf.info["fused"].startswith("off (fused forward differs")
    nl, _ = naive_surface(model, plane, [0.0, 1.0], [0.0], splits)
    np.testing.assert_allclose(surf.loss["test"], nl["test"], rtol=1e-12)


def test_roomy_heap_sets_and_restores_the_allocator(monkeypatch):
    calls = []

    class FakeLibc:
        def mallopt(self, param, value):
            calls.append((param, value))
            return 1

    monkeypatch.setattr(heap, "_glibc", lambda: FakeLibc())
    with heap.roomy_heap(pad_bytes=1234):
        assert calls == [(heap._M_MMAP_THRESHOLD, heap._MMAP_THRESHOLD_MAX), (heap._M_TOP_PAD, 1234)]
    assert calls[-1] == (heap._M_TOP_PAD, heap._GLIBC_DEFAULT_TOP_PAD), "the pad goes back to glibc's default"
    calls.clear()
    monkeypatch.setattr(heap, "TUNE_HEAP", False)
    with heap.roomy_heap():
        pass
    assert calls == [], "TUNE_HEAP = False leaves the allocator alone"


@pytest.mark.skipif(heap._glibc() is None, reason="glibc only")
def test_roomy_heap_keeps_freed_activations_off_fresh_pages():
    # A fresh process: the allocator's state after other tests would blur the count. Its mmap threshold is first
    # frozen at glibc's 128 KiB default, the state of a process where anything has called mallopt (glibc's dynamic
    # threshold otherwise makes the unset count vary from run to run, from 0 to tens of thousands of faults).
    code = """
import resource, torch
from lmc_core.foundations import heap
def faults(n=32):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(n):
        torch.ones(4 << 20).sum()  # 16 MB allocated, touched and freed, as a conv forward's activations
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
heap._glibc().mallopt(heap._M_MMAP_THRESHOLD, 128 * 1024)
faults(2)
plain = faults()
with heap.roomy_heap():
    faults(2)
    roomy = faults()
print(plain, roomy)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True).stdout.split()
    plain, roomy = int(out[0]), int(out[1])
    pages = 32 * (16 << 20) // 4096
    assert plain >= pages, "with a frozen 128 KiB threshold every freed 16 MB block comes back as fresh pages (roomy_heap's premise)"
    # one late heap growth (a single 16 MB block of first touches) is allowed; a fault storm per block is not
    assert roomy < plain / 4
