"""Tests of the loss-landscape planes, grids and surface evaluation (lmc_core.landscape.surface)."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from lmc_core.connectivity.path import evaluate_path
from lmc_core.foundations.config import ModelConfig
from lmc_core.landscape.grid import coarse_to_fine, coarse_to_fine_2d, grid_axis
from lmc_core.landscape.plane import Plane, four_solution_plane, pca_plane, plane_through, random_plane, split_state
from lmc_core.landscape.surface import Surface, SurfaceOptions, evaluate_surface
from lmc_core.models import build_model
from lmc_core.prune.magnitude import dense_masks, magnitude_prune
from lmc_core.train.evaluation import evaluate

# ----------------------------------------------------------------------------- fixtures


def mlp(seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return model


def conv_net(seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Conv1d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(32, 4))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return model


def data(n: int = 64, shape: tuple[int, ...] = (8,), seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *shape, generator=g)
    y = torch.randint(0, 4, (n,), generator=g)
    return x, y


def state_of(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def random_state(template: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(v.shape, generator=g, dtype=v.dtype) if v.is_floating_point() else v.clone() for k, v in template.items()}


def pruned_masks(model: nn.Module, sparsity: float = 0.6) -> dict[str, torch.Tensor]:
    masks = magnitude_prune(state_of(model), dense_masks(model), sparsity)
    # prune one whole filter (output row) of the first layer too: the epsilon must keep it zero
    masks["0.weight"][3] = False
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name in masks:
                p.mul_(masks[name])
    return masks


def fingerprint(model: nn.Module):
    return (
        {k: v.detach().clone() for k, v in model.state_dict().items()},
        {n: p.requires_grad for n, p in model.named_parameters()},
        [m.training for m in model.modules()],
    )


def assert_unchanged(model: nn.Module, before) -> None:
    state, grads, modes = before
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k
    assert {n: p.requires_grad for n, p in model.named_parameters()} == grads
    assert [m.training for m in model.modules()] == modes


def naive_surface(model: nn.Module, plane: Plane, xs, ys, splits, masks=None, buffers=None, batch_size=1000):
    """One model per point, built with load_state_dict: the obvious reference implementation."""
    loss = {s: np.zeros((len(xs), len(ys))) for s in splits}
    error = {s: np.zeros((len(xs), len(ys))) for s in splits}
    for i, a in enumerate(xs):
        for j, b in enumerate(ys):
            m = copy.deepcopy(model)
            st = m.state_dict()
            st.update(plane.at(a, b, masks))
            if buffers:
                st.update(buffers)
            m.load_state_dict(st)
            for s, (x, y) in splits.items():
                r = evaluate(m, x, y, batch_size)
                loss[s][i, j], error[s][i, j] = r.loss, r.error
    return loss, error


# ----------------------------------------------------------------------------- grids


@pytest.mark.parametrize("n", [1, 3, 5, 9, 21, 51])
def test_grid_axis_symmetric_exact_zero(n):
    g = grid_axis(1.5, n)
    assert g.shape == (n,)
    assert g[n // 2] == 0.0
    np.testing.assert_array_equal(g, -g[::-1])  # exactly symmetric
    if n > 1:
        assert g[0] == -1.5 and g[-1] == 1.5
        half = n // 2
        np.testing.assert_array_equal(g, 1.5 * np.arange(-half, half + 1) / half)


def test_grid_axis_rejects_even_resolution_with_fix():
    with pytest.raises(ValueError, match="use 21 or 23"):
        grid_axis(1.0, 22)
    with pytest.raises(ValueError, match="span must be a positive finite number"):
        grid_axis(0.0, 5)


@pytest.mark.parametrize("n", [1, 5, 9, 13, 21])
def test_coarse_to_fine_permutation_coarse_first(n):
    order = coarse_to_fine(n)
    assert sorted(order.tolist()) == list(range(n))
    centre = n // 2
    coarse = {i for i in range(n) if (i - centre) % 4 == 0} | {0, n - 1}
    assert set(order[: len(coarse)].tolist()) == coarse
    medium = {i for i in range(n) if (i - centre) % 2 == 0} | coarse
    assert set(order[: len(medium)].tolist()) == medium
    # 2-D: the first points are exactly the coarse x coarse subgrid
    order2 = coarse_to_fine_2d(n, n)
    assert sorted(order2) == [(i, j) for i in range(n) for j in range(n)]
    assert set(order2[: len(coarse) ** 2]) == {(i, j) for i in coarse for j in coarse}


# ----------------------------------------------------------------------------- random plane


def test_random_plane_seeded_filter_normalised_biasbn_zero():
    model = conv_net()
    state = state_of(model)
    p1, p2, p3 = random_plane(state, seed=3), random_plane(state, seed=3), random_plane(state, seed=4)
    for k in p1.d1:
        assert torch.equal(p1.d1[k], p2.d1[k]) and torch.equal(p1.d2[k], p2.d2[k])
    assert not torch.equal(p1.d1["0.weight"], p3.d1["0.weight"])
    assert not torch.equal(p1.d1["0.weight"], p1.d2["0.weight"])
    for k, t in state.items():
        d = p1.d1[k]
        if t.dim() >= 2:
            torch.testing.assert_close(d.flatten(1).norm(dim=1), t.double().flatten(1).norm(dim=1), rtol=1e-6, atol=0)
            torch.testing.assert_close(p1.d2[k].flatten(1).norm(dim=1), t.double().flatten(1).norm(dim=1), rtol=1e-6, atol=0)
        else:
            assert torch.count_nonzero(d) == 0 and torch.count_nonzero(p1.d2[k]) == 0
    # directions are Gaussian, not uniform: roughly zero mean
    assert abs(float(p1.d1["3.weight"].mean())) < 0.3 * float(p1.d1["3.weight"].abs().mean())
    cos = sum(float((p1.d1[k] * p1.d2[k]).sum()) for k in p1.d1) / (p1.info["norm_d1"] * p1.info["norm_d2"])
    assert p1.info["cosine"] == pytest.approx(cos, abs=1e-12)
    # ignore="none": biases normalised as whole vectors
    pn = random_plane(state, seed=3, ignore="none")
    torch.testing.assert_close(pn.d1["0.bias"].norm(), state["0.bias"].double().norm(), rtol=1e-6, atol=0)
    assert torch.count_nonzero(pn.d1["0.bias"]) == 4
    with pytest.raises(ValueError, match="ignore must be one of"):
        random_plane(state, ignore="bn")


def test_random_plane_masks_keep_pruned_weights_zero():
    model = mlp()
    masks = pruned_masks(model)
    state = state_of(model)
    plane = random_plane(state, masks=masks, seed=1)
    axis = grid_axis(2.0, 5)
    for k, m in masks.items():
        assert torch.count_nonzero(plane.d1[k][~m]) == 0 and torch.count_nonzero(plane.d2[k][~m]) == 0
        # unmasked filters still match theta's filter norms (the pruned filter row 3 stays zero)
        tn = state[k].double().flatten(1).norm(dim=1)
        torch.testing.assert_close(plane.d1[k].flatten(1).norm(dim=1), tn, rtol=1e-6, atol=1e-12)
    assert torch.count_nonzero(plane.d1["0.weight"][3]) == 0
    for a in axis:
        for b in axis:
            st = plane.at(a, b)
            for k, m in masks.items():
                assert torch.equal(st[k][~m], torch.zeros(int((~m).sum())))
    # masks passed to at() win as well: a dense plane is masked on request
    dense = random_plane(state, seed=1)
    st = dense.at(1.0, -1.0, masks)
    assert all(torch.count_nonzero(st[k][~m]) == 0 for k, m in masks.items())
    assert any(torch.count_nonzero(dense.at(1.0, -1.0)[k][~m]) > 0 for k, m in masks.items())


def test_random_plane_orthogonalize():
    state = state_of(mlp())
    plane = random_plane(state, seed=0, orthogonalize=True)
    dot = sum(float((plane.d1[k] * plane.d2[k]).sum()) for k in plane.d1)
    assert abs(plane.info["cosine"]) < 1e-6
    assert abs(dot) / (plane.info["norm_d1"] * plane.info["norm_d2"]) < 1e-6
    raw = random_plane(state, seed=0)
    assert abs(raw.info["cosine"]) > 1e-6  # it was not orthogonal before
    for k in plane.d1:  # d1 untouched by Gram-Schmidt
        assert torch.equal(plane.d1[k], raw.d1[k])


def test_plane_at_centre_exact_and_buffers_separate():
    model = nn.Sequential(nn.Linear(8, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 4))
    state = state_of(model)
    params, buffers = split_state(state)
    assert set(buffers) == {"1.running_mean", "1.running_var", "1.num_batches_tracked"}
    plane = random_plane(state, seed=0)
    assert set(plane.centre) == set(params) and set(plane.buffers) == set(buffers)
    at0 = plane.at(0.0, 0.0)
    for k, v in params.items():
        assert at0[k].dtype == v.dtype and torch.equal(at0[k], v)
    st = plane.at(0.5, -0.25)
    torch.testing.assert_close(
        st["0.weight"].double(), params["0.weight"].double() + 0.5 * plane.d1["0.weight"] - 0.25 * plane.d2["0.weight"]
    )


# ----------------------------------------------------------------------------- planes through solutions


def test_plane_through_orthonormal_and_reproduces_points():
    s = state_of(mlp())
    t0, t1, t2 = random_state(s, 1), random_state(s, 2), random_state(s, 3)
    plane = plane_through(t0, t1, t2)
    d1, d2 = plane.d1, plane.d2
    dot = lambda u, v: sum(float((u[k] * v[k]).sum()) for k in u)  # noqa: E731
    assert dot(d1, d1) == pytest.approx(1.0, abs=1e-12)
    assert dot(d2, d2) == pytest.approx(1.0, abs=1e-12)
    assert abs(dot(d1, d2)) < 1e-12
    # coordinates in parameter-norm units: t1 is at its distance from t0
    dist = math.sqrt(sum(float(((t1[k].double() - t0[k].double()) ** 2).sum()) for k in t0))
    assert plane.points["t1"] == (pytest.approx(dist, rel=1e-12), 0.0)
    for name, t in (("t0", t0), ("t1", t1), ("t2", t2)):
        st = plane.at(*plane.points[name])
        for k in t:
            torch.testing.assert_close(st[k], t[k], rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="collinear"):
        plane_through(t0, t1, {k: 2 * t1[k] - t0[k] for k in t0})


def test_four_solution_plane_reproduces_models():
    s = state_of(mlp())
    t0, t1, v = random_state(s, 1), random_state(s, 2), random_state(s, 3)
    mid = {k: (t0[k] + t1[k]) / 2 for k in t0}
    # t2, t3 in the plane: t3 - t2 = 2 v and their midpoint offset 0.3 * (t0 - t1) / 2 from M
    t2 = {k: mid[k] + 0.15 * (t0[k] - t1[k]) - v[k] for k in t0}
    t3 = {k: mid[k] + 0.15 * (t0[k] - t1[k]) + v[k] for k in t0}
    plane = four_solution_plane(t0, t1, t2, t3)
    assert plane.points["t0"] == (1.0, 0.0) and plane.points["t1"] == (-1.0, 0.0)
    for k in t0:  # endpoints of the first pair: exactly the models
        assert torch.equal(plane.at(1.0, 0.0)[k], t0[k])
        assert torch.equal(plane.at(-1.0, 0.0)[k], t1[k])
        torch.testing.assert_close(plane.d1[k], (t0[k].double() - t1[k].double()) / 2)
        torch.testing.assert_close(plane.d2[k], (t3[k].double() - t2[k].double()) / 2)
    for name, t in (("t2", t2), ("t3", t3)):
        a, b = plane.points[name]
        assert a == pytest.approx(0.3, abs=1e-5) and abs(b) == pytest.approx(1.0, abs=1e-5)
        assert plane.info["residual"][name] < 1e-6
        st = plane.at(a, b)
        for k in t:
            torch.testing.assert_close(st[k], t[k], rtol=1e-5, atol=1e-5)
    # centre="t0": t0 at the origin, exactly; t1 at (-2, 0)
    p0 = four_solution_plane(t0, t1, t2, t3, centre="t0")
    assert p0.points["t1"] == (-2.0, 0.0)
    for k in t0:
        assert torch.equal(p0.at(0.0, 0.0)[k], t0[k])
        torch.testing.assert_close(p0.at(-2.0, 0.0)[k], t1[k], rtol=1e-6, atol=1e-6)
    # generic t2, t3 are off the plane and say so
    gen = four_solution_plane(t0, t1, random_state(s, 4), random_state(s, 5))
    assert gen.info["residual"]["t2"] > 0.1
    assert gen.info["nominal"]["t2"] == (0.0, -1.0)


def test_pca_plane_exact_for_planar_trajectory():
    s = state_of(mlp())
    final, u, w = random_state(s, 1), random_state(s, 2), random_state(s, 3)
    coeffs = [(3.0, -1.0), (2.0, 0.5), (1.2, 1.0), (0.5, 0.2), (0.1, -0.3), (0.0, 0.0)]
    traj = [{k: final[k] + a * u[k] + b * w[k] for k in final} for a, b in coeffs]
    plane = pca_plane(traj)
    assert sum(plane.info["explained_variance"]) == pytest.approx(1.0, abs=1e-6)
    assert plane.info["explained_variance"][0] >= plane.info["explained_variance"][1]
    dot = lambda p, q: sum(float((p[k] * q[k]).sum()) for k in p)  # noqa: E731
    assert dot(plane.d1, plane.d1) == pytest.approx(1.0) and abs(dot(plane.d1, plane.d2)) < 1e-10
    assert plane.points["ckpt5"] == (pytest.approx(0.0, abs=1e-9), pytest.approx(0.0, abs=1e-9))
    for i, t in enumerate(traj):
        st = plane.at(*plane.points[f"ckpt{i}"])
        for k in t:
            torch.testing.assert_close(st[k], t[k], rtol=1e-5, atol=1e-5)
    mean_plane = pca_plane(traj, centre="mean")
    for k in final:
        torch.testing.assert_close(mean_plane.centre[k], torch.stack([t[k].double() for t in traj]).mean(0))
    for i, t in enumerate(traj):
        st = mean_plane.at(*mean_plane.points[f"ckpt{i}"])
        for k in t:
            torch.testing.assert_close(st[k], t[k], rtol=1e-5, atol=1e-5)
    # a trajectory with noise off the plane explains less than everything
    noisy = [{k: t[k] + 0.3 * torch.randn(t[k].shape, generator=torch.Generator().manual_seed(i)) for k in t} for i, t in enumerate(traj)]
    assert sum(pca_plane(noisy).info["explained_variance"]) < 0.999


# ----------------------------------------------------------------------------- surfaces


def test_surface_centre_exact_strategies_agree_and_model_untouched():
    model = mlp()
    model.train()
    model[2].weight.requires_grad_(False)  # an unusual flag the evaluation must not reset
    before = fingerprint(model)
    splits = {"train": data(48, seed=1), "test": data(40, seed=2)}
    plane = random_plane(state_of(model), seed=0)
    xs, ys = grid_axis(1.0, 5), grid_axis(0.5, 3)
    loop = evaluate_surface(model, plane, xs, ys, splits, SurfaceOptions(strategy="loop", batch_size=32))
    batched = evaluate_surface(model, plane, xs, ys, splits, SurfaceOptions(strategy="batched", batch_size=32, chunk=4))
    assert_unchanged(model, before)
    assert loop.loss["train"].shape == (5, 3) and loop.strategy == "loop" and batched.strategy == "batched"
    for s, (x, y) in splits.items():
        ref = evaluate(model, x, y, 32)
        assert loop.loss[s][2, 1] == ref.loss and loop.error[s][2, 1] == ref.error
        np.testing.assert_allclose(batched.loss[s], loop.loss[s], rtol=1e-5, atol=0)
        np.testing.assert_allclose(batched.error[s], loop.error[s], rtol=0, atol=1.0 / len(x) + 1e-12)
    assert_unchanged(model, before)
    nl, ne = naive_surface(model, plane, xs, ys, splits, batch_size=32)
    for s in splits:
        np.testing.assert_allclose(loop.loss[s], nl[s], rtol=1e-12, atol=0)
        np.testing.assert_array_equal(loop.error[s], ne[s])
    assert not np.allclose(loop.loss["train"], loop.loss["train"][2, 1])  # the surface is not flat


def test_surface_masks_conv_and_npz_roundtrip(tmp_path):
    model = conv_net()
    masks = {"0.weight": torch.rand(4, 1, 3, generator=torch.Generator().manual_seed(0)) > 0.4}
    with torch.no_grad():
        model[0].weight.mul_(masks["0.weight"])
    splits = {"test": data(32, shape=(1, 8), seed=3)}
    plane = random_plane(state_of(model), masks=masks, seed=2)
    xs = grid_axis(1.0, 3)
    surf = evaluate_surface(model, plane, xs, xs, splits, SurfaceOptions(strategy="batched"))
    nl, _ = naive_surface(model, plane, xs, xs, splits, masks=masks)
    np.testing.assert_allclose(surf.loss["test"], nl["test"], rtol=1e-5)
    # a dense evaluation of the same directions would differ: the masks matter
    dense_plane = random_plane(state_of(model), seed=2)
    assert dense_plane.masks is None
    np.savez(tmp_path / "s.npz", **surf.to_arrays())
    back = Surface.from_arrays(np.load(tmp_path / "s.npz"))
    np.testing.assert_array_equal(back.loss["test"], surf.loss["test"])
    np.testing.assert_array_equal(back.xs, surf.xs)
    assert back.evaluated.all() and back.done.dtype == bool
    assert back.kind == "random" and back.points == {"centre": (0.0, 0.0)} and back.info["seed"] == 2
    assert back.bn_mode == surf.bn_mode == "none"


def test_surface_callback_coarse_first():
    model = mlp()
    splits = {"test": data(16)}
    plane = random_plane(state_of(model), seed=0)
    xs = grid_axis(1.0, 9)
    calls = []
    surf = evaluate_surface(
        model, plane, xs, xs, splits, SurfaceOptions(strategy="loop", chunk=5, callback=lambda d, t, p: calls.append((d, t, p)))
    )
    counts = [c[0] for c in calls]
    assert counts == sorted(counts) and len(set(counts)) == len(counts) and counts[-1] == 81
    assert all(c[1] == 81 for c in calls)
    coarse = [0, 4, 8]
    first_complete = next(p for d, _, p in calls if d >= 9)
    ev = first_complete.evaluated
    assert all(ev[i, j] for i in coarse for j in coarse)
    assert ev.sum() == 10  # nothing else yet beyond the first point of the next level
    assert calls[-1][2].evaluated.all()
    np.testing.assert_array_equal(calls[-1][2].loss["test"], surf.loss["test"])


def test_bn_modes_on_convnet():
    cfg = ModelConfig(arch="convnet", depth=1, width=4, norm="batch", pooling="avg")
    model = build_model(cfg, (1, 8, 8), 4, seed=0)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        bn = model.features[1]
        bn.running_mean.uniform_(-1, 1, generator=g)
        bn.running_var.uniform_(0.5, 2, generator=g)
    model.eval()
    before = fingerprint(model)
    calib = torch.randn(64, 1, 8, 8, generator=g)
    splits = {"test": data(32, shape=(1, 8, 8), seed=5)}
    state = state_of(model)
    plane = random_plane(state, seed=1)
    xs = grid_axis(0.5, 3)
    surf = evaluate_surface(
        model, plane, xs, xs, splits, SurfaceOptions(calibration=calib, bn_batches=2, bn_batch_size=32, strategy="loop")
    )
    assert surf.bn_mode == "reestimate" and surf.info["bn"] == {"batches": 2, "batch_size": 32, "calibration_inputs": 64}
    path = evaluate_path(model, state, state, splits, np.array([0.0]), calibration=calib, bn_batches=2, bn_batch_size=32, strategy="loop")
    assert surf.loss["test"][1, 1] == path.loss["test"][0] and surf.error["test"][1, 1] == path.error["test"][0]
    batched = evaluate_surface(
        model, plane, xs, xs, splits, SurfaceOptions(calibration=calib, bn_batches=2, bn_batch_size=32, strategy="batched")
    )
    np.testing.assert_allclose(batched.loss["test"], surf.loss["test"], rtol=1e-5)
    # endpoint: the centre's statistics everywhere; at the centre that is the model itself
    ep = evaluate_surface(model, plane, xs, xs, splits, SurfaceOptions(bn_mode="endpoint", strategy="loop"))
    ref = evaluate(model, *splits["test"])
    assert ep.loss["test"][1, 1] == ref.loss
    assert ep.loss["test"][1, 1] != surf.loss["test"][1, 1]
    # interpolate is undefined on a random plane
    with pytest.raises(ValueError, match="interpolate"):
        evaluate_surface(model, plane, xs, xs, splits, SurfaceOptions(bn_mode="interpolate"))
    with pytest.raises(ValueError, match="calibration"):
        evaluate_surface(model, plane, xs, xs, splits)
    with pytest.raises(ValueError, match="does not match"):
        evaluate_surface(mlp(), plane, xs, xs, splits, SurfaceOptions(bn_mode="endpoint"))
    assert_unchanged(model, before)


def test_interpolate_bn_on_four_solution_plane_matches_each_model():
    cfg = ModelConfig(arch="convnet", depth=1, width=4, norm="batch", pooling="avg")
    models = [build_model(cfg, (1, 8, 8), 4, seed=s) for s in range(4)]
    for s, m in enumerate(models):
        g = torch.Generator().manual_seed(10 + s)
        with torch.no_grad():
            m.features[1].running_mean.uniform_(-1, 1, generator=g)
            m.features[1].running_var.uniform_(0.5, 2, generator=g)
            m.features[1].weight.uniform_(0.5, 1.5, generator=g)
        m.eval()
    states = [state_of(m) for m in models]
    plane = four_solution_plane(*states)
    splits = {"test": data(32, shape=(1, 8, 8), seed=6)}
    xs = np.array([-1.0, 0.0, 1.0])
    ys = np.array([0.0])
    surf = evaluate_surface(models[0], plane, xs, ys, splits, SurfaceOptions(bn_mode="interpolate", strategy="loop"))
    for i, m in ((0, models[1]), (2, models[0])):  # (-1, 0) is t1, (1, 0) is t0
        ref = evaluate(m, *splits["test"])
        assert surf.loss["test"][i, 0] == pytest.approx(ref.loss, rel=1e-5)
    for k, v in plane.buffers_at(1.0, 0.0).items():  # the statistics follow the same rule, exactly at the models
        assert torch.equal(v.to(states[0][k].dtype), states[0][k]), k
    for k, v in plane.buffers_at(-1.0, 0.0).items():
        if v.is_floating_point():
            assert torch.equal(v.to(states[1][k].dtype), states[1][k]), k
    # the statistics at the midpoint are not those of either model, so the centre value differs from both
    mid = surf.loss["test"][1, 0]
    assert mid != surf.loss["test"][0, 0] and mid != surf.loss["test"][2, 0]


# ----------------------------------------------------------------------------- first-layer reuse


@pytest.mark.parametrize("kind", ["mlp", "convnet", "convnet_bn"])
def test_first_layer_reuse_equals_plain_evaluation_float64(kind):
    if kind == "mlp":
        model = build_model(ModelConfig(arch="mlp", hidden=[12, 12]), (2, 4), 4, seed=0)  # Flatten precedes the first Linear
        shape = (2, 4)
    else:
        norm = "batch" if kind == "convnet_bn" else "none"
        model = build_model(ModelConfig(arch="convnet", depth=2, width=4, norm=norm, pooling="avg"), (1, 8, 8), 4, seed=0)
        shape = (1, 8, 8)
    model = model.double()
    masks = {k: torch.rand(v.shape, generator=torch.Generator().manual_seed(1)) > 0.3 for k, v in dense_masks(model).items()}
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name in masks:
                p.mul_(masks[name])
    x, y = data(40, shape=shape, seed=7)
    splits = {"test": (x.double(), y)}
    calib = torch.randn(32, *shape, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    plane = random_plane(state_of(model), masks=masks, seed=4, ignore="none")  # bias directions non-zero too
    xs = grid_axis(1.0, 3)
    kw = dict(calibration=calib, bn_batches=2, bn_batch_size=16, batch_size=16, strategy="loop")
    plain = evaluate_surface(model, plane, xs, xs, splits, SurfaceOptions(**kw))
    reused = evaluate_surface(model, plane, xs, xs, splits, SurfaceOptions(reuse_first_layer=True, **kw))
    assert reused.strategy == "loop+first_layer"
    np.testing.assert_allclose(reused.loss["test"], plain.loss["test"], rtol=1e-10, atol=0)
    np.testing.assert_array_equal(reused.error["test"], plain.error["test"])
    kw["strategy"] = "batched"
    stacked = evaluate_surface(model, plane, xs, xs, splits, SurfaceOptions(reuse_first_layer=True, chunk=4, **kw))
    assert stacked.strategy == "batched+first_layer"
    np.testing.assert_allclose(stacked.loss["test"], plain.loss["test"], rtol=1e-10, atol=0)
    np.testing.assert_array_equal(stacked.error["test"], plain.error["test"])


def test_first_layer_reuse_refuses_norm_before_first_layer():
    model = nn.Sequential(nn.BatchNorm1d(8), nn.Linear(8, 4))
    plane = random_plane(state_of(model), seed=0)
    with pytest.raises(ValueError, match="raw input"):
        evaluate_surface(model, plane, [0.0], [0.0], {"t": data(8)}, SurfaceOptions(bn_mode="endpoint", reuse_first_layer=True))
    lin = nn.Linear(8, 4)
    with pytest.raises(ValueError, match="single"):
        evaluate_surface(lin, random_plane(state_of(lin), seed=0), [0.0], [0.0], {"t": data(8)}, SurfaceOptions(reuse_first_layer=True))


def test_auto_strategy_measures_both_and_matches_the_loop():
    """strategy='auto' times loop and batched on real grid points, keeps one, and the surface equals the loop's."""
    model = mlp()
    before = fingerprint(model)
    splits = {"test": data(40, seed=2)}
    plane = random_plane(state_of(model), seed=0)
    xs = grid_axis(1.0, 9)  # 81 points: enough to time a chunk of 4 with each strategy first
    auto = evaluate_surface(model, plane, xs, xs, splits, SurfaceOptions(strategy="auto", batch_size=40, chunk=4))
    loop = evaluate_surface(model, plane, xs, xs, splits, SurfaceOptions(strategy="loop", batch_size=40))
    assert auto.strategy in ("loop", "batched")
    timings = auto.info["strategy_timings_ms_per_point"]
    assert set(timings) == {"loop", "batched"} and auto.strategy == min(timings, key=timings.get)
    assert auto.evaluated.all()
    np.testing.assert_allclose(auto.loss["test"], loop.loss["test"], rtol=1e-5, atol=0)
    assert auto.loss["test"][4, 4] == loop.loss["test"][4, 4] == evaluate(model, *splits["test"], 40).loss  # the centre, exactly
    assert_unchanged(model, before)


def test_first_layer_reuse_switches_itself_off_beyond_its_memory_budget(monkeypatch):
    import lmc_core.landscape.evaluator as pe

    monkeypatch.setattr(pe, "REUSE_BUDGET_BYTES", 1024)
    model = mlp()
    splits = {"test": data(64, seed=2)}
    plane = random_plane(state_of(model), seed=0)
    surf = evaluate_surface(model, plane, [0.0, 0.5], [0.0], splits, SurfaceOptions(strategy="loop", reuse_first_layer=True))
    ref = evaluate_surface(model, plane, [0.0, 0.5], [0.0], splits, SurfaceOptions(strategy="loop"))
    assert surf.strategy == "loop" and surf.info["first_layer_reuse"].startswith("off (its cache would need")
    np.testing.assert_array_equal(surf.loss["test"], ref.loss["test"])
