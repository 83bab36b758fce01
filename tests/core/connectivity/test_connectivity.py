"""Tests of the linear path between two copies: grid, interpolation, barriers, BatchNorm modes, masks, strategies."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from torch import nn
from torch.optim.swa_utils import update_bn

from lmc_core.connectivity.batchnorm import calibration_batches, has_batchnorm
from lmc_core.connectivity.engine import choose_strategy
from lmc_core.connectivity.path import PathResult, alpha_grid, error_barrier, evaluate_path, interpolate_state, loss_barrier, path_states
from lmc_core.train.evaluation import evaluate

# ----------------------------------------------------------------------------- fixtures


def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4))


def conv_net() -> nn.Module:
    # (N, 1, 16) -> (N, 8, 8) -> (N, 8, 4) -> 32 features
    return nn.Sequential(
        nn.Conv1d(1, 8, 5, stride=2, padding=2),
        nn.ReLU(),
        nn.Conv1d(8, 8, 5, stride=2, padding=2),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(32, 4),
    )


def bn_net() -> nn.Module:
    return nn.Sequential(nn.Linear(8, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 4))


def copies(build, seed_a: int = 1, seed_b: int = 2) -> tuple[nn.Module, dict, dict]:
    """Return a template and two differently initialised states; BN running stats made distinct too."""
    states = []
    for seed in (seed_a, seed_b):
        torch.manual_seed(seed)
        model = build()
        for m in model.modules():
            if isinstance(m, nn.BatchNorm1d):
                assert m.running_mean is not None and m.running_var is not None and m.num_batches_tracked is not None
                m.running_mean.uniform_(-1.0, 1.0)
                m.running_var.uniform_(0.5, 2.0)
                m.num_batches_tracked.fill_(100 + seed)
        states.append({k: v.clone() for k, v in model.state_dict().items()})
    torch.manual_seed(0)
    return build(), states[0], states[1]


def data(n: int = 300, shape: tuple[int, ...] = (8,), seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *shape, generator=g) * 1.5 + 0.3
    y = torch.randint(0, 4, (n,), generator=g)
    return x, y


def loaded(build, state: dict) -> nn.Module:
    model = build()
    model.load_state_dict(state)
    return model


# ----------------------------------------------------------------------------- grid and interpolation


def test_alpha_grid_endpoints_exact_and_even():
    a = alpha_grid(31)
    assert a.shape == (31,)
    assert a[0] == 0.0 and a[-1] == 1.0 and a[15] == 0.5
    np.testing.assert_allclose(np.diff(a), 1.0 / 30.0, rtol=0, atol=1e-15)
    assert list(alpha_grid(2)) == [0.0, 1.0]
    with pytest.raises(ValueError, match="at least 2 points"):
        alpha_grid(1)


def test_interpolate_state_endpoints_bitwise_and_midpoint():
    g = torch.Generator().manual_seed(0)
    a = {"w": torch.randn(5, 3, generator=g), "n": torch.tensor(7)}
    b = {"w": torch.randn(5, 3, generator=g), "n": torch.tensor(9)}
    a["w"][0, 0] = -0.0  # a + 0 * (b - a) would turn this into +0.0
    a["w"][0, 1] = 1e30  # and this into a rounded value when b is tiny
    s0, s1 = interpolate_state(a, b, 0.0), interpolate_state(a, b, 1.0)
    assert torch.equal(s0["w"].view(torch.int32), a["w"].view(torch.int32))
    assert torch.equal(s1["w"].view(torch.int32), b["w"].view(torch.int32))
    assert s0["w"].data_ptr() != a["w"].data_ptr()  # a copy, so in-place BN updates never reach the caller
    # integer buffers are taken from a at every alpha
    assert int(s0["n"]) == 7 and int(s1["n"]) == 7 and s1["n"].dtype == torch.int64
    mid = interpolate_state({"w": torch.full((4,), 1.0)}, {"w": torch.full((4,), 3.0)}, 0.5)
    assert torch.equal(mid["w"], torch.full((4,), 2.0))
    s = interpolate_state(a, b, 0.3)
    torch.testing.assert_close(s["w"][1:], 0.7 * a["w"][1:] + 0.3 * b["w"][1:], rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="different keys"):
        interpolate_state(a, {"w": b["w"]}, 0.5)


# ----------------------------------------------------------------------------- barriers


def test_barrier_bump_of_known_height():
    alphas = alpha_grid(11)
    curve = 0.1 + 0.3 * np.sin(np.pi * alphas)  # peak 0.4 at alpha = 0.5, endpoints 0.1
    assert error_barrier(curve) == pytest.approx(0.3, abs=1e-12)
    assert loss_barrier(curve, alphas) == pytest.approx(0.3, abs=1e-12)


def test_barrier_v_shape_is_zero():
    alphas = alpha_grid(11)
    curve = 0.2 + np.abs(alphas - 0.5)  # a valley between equal endpoints: connected, no barrier
    assert error_barrier(curve) == pytest.approx(0.0, abs=1e-12)
    assert loss_barrier(curve, alphas) == pytest.approx(0.0, abs=1e-12)


def test_straight_line_unequal_endpoints_separates_the_definitions():
    alphas = alpha_grid(11)
    line = 0.2 + 0.4 * alphas
    # Entezari's barrier subtracts the chord, so a straight line has none;
    assert loss_barrier(line, alphas) == pytest.approx(0.0, abs=1e-12)
    # Frankle's subtracts the mean of the endpoints: 0.6 - (0.2 + 0.6) / 2.
    assert error_barrier(line) == pytest.approx(0.2, abs=1e-12)


def test_off_centre_peak_uses_the_chord_at_its_alpha():
    alphas = np.array([0.0, 0.25, 0.5, 0.75, 1.0])
    curve = np.array([0.1, 0.5, 0.35, 0.32, 0.3])
    assert error_barrier(curve) == pytest.approx(0.5 - 0.2)
    assert loss_barrier(curve, alphas) == pytest.approx(0.5 - 0.15)  # chord at 0.25 is 0.75 * 0.1 + 0.25 * 0.3


def test_model_interpolated_with_itself_has_zero_barriers():
    model, a, _ = copies(mlp)
    x, y = data()
    for strategy in ("loop", "batched"):
        res = evaluate_path(model, a, a, {"test": (x, y)}, alpha_grid(7), strategy=strategy)
        bars = res.barriers()["test"]
        assert bars == {"error": 0.0, "loss": 0.0}, strategy


# ----------------------------------------------------------------------------- the path


@pytest.mark.parametrize("strategy", ["loop", "batched"])
def test_path_reproduces_endpoint_and_interior_models(strategy):
    model, a, b = copies(mlp)
    x, y = data()
    xt, yt = data(seed=1)
    alphas = np.array([0.0, 0.3, 1.0])
    res = evaluate_path(model, a, b, {"train": (x, y), "test": (xt, yt)}, alphas, strategy=strategy, batch_size=128)
    assert res.bn_mode == "none"
    for i, state in enumerate([a, interpolate_state(a, b, 0.3), b]):
        net = loaded(mlp, state)
        for split, (xs, ys) in {"train": (x, y), "test": (xt, yt)}.items():
            own = evaluate(net, xs, ys)
            assert res.loss[split][i] == pytest.approx(own.loss, abs=1e-6)
            assert res.error[split][i] == pytest.approx(own.error, abs=1e-6)
    # the copies really differ, so matching both endpoints is not trivial
    assert abs(res.loss["test"][0] - res.loss["test"][2]) > 1e-3


def test_template_and_states_are_never_modified():
    model, a, b = copies(bn_net)
    model.add_module("drop", nn.Dropout(0.5))  # appended after the classifier: identity in eval mode
    model[0].weight.requires_grad_(False)
    model.train()
    a_before = {k: v.clone() for k, v in a.items()}
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    modes = {n: m.training for n, m in model.named_modules()}
    momenta = {n: m.momentum for n, m in model.named_modules() if isinstance(m, nn.BatchNorm1d)}
    x, y = data()
    for strategy in ("loop", "batched"):
        for mode in ("reestimate", "interpolate", "endpoint"):
            evaluate_path(model, a, b, {"test": (x, y)}, alpha_grid(3), bn_mode=mode, calibration=x, strategy=strategy)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    assert {n: m.training for n, m in model.named_modules()} == modes
    assert {n: m.momentum for n, m in model.named_modules() if isinstance(m, nn.BatchNorm1d)} == momenta
    assert all(torch.equal(a_before[k], a[k]) for k in a)


# ----------------------------------------------------------------------------- BatchNorm


def test_bn_reestimation_matches_swa_update_bn():
    model, a, b = copies(bn_net)
    x_train, _ = data(600, seed=3)
    x_test, y_test = data(seed=4)
    res = evaluate_path(
        model,
        a,
        b,
        {"test": (x_test, y_test)},
        np.array([0.0, 0.5, 1.0]),
        bn_mode="reestimate",
        calibration=x_train,
        bn_batches=3,
        bn_batch_size=128,
        strategy="loop",
    )
    assert res.bn_mode == "reestimate"
    for i, alpha in enumerate([0.0, 0.5, 1.0]):
        net = loaded(bn_net, interpolate_state(a, b, alpha))
        update_bn([x_train[j * 128 : (j + 1) * 128] for j in range(3)], net)
        own = evaluate(net, x_test, y_test)
        assert res.loss["test"][i] == pytest.approx(own.loss, abs=1e-5)
        assert res.error["test"][i] == pytest.approx(own.error, abs=1e-5)
    # the number of calibration batches matters, so it is really used
    one = evaluate_path(model, a, b, {"test": (x_test, y_test)}, np.array([0.5]), calibration=x_train, bn_batches=1)
    assert abs(one.loss["test"][0] - res.loss["test"][1]) > 1e-5


def test_calibration_batches_are_the_first_consecutive_ones():
    x = torch.arange(10.0).unsqueeze(1)
    batches = calibration_batches(x, 3, 4)
    assert [b.squeeze(1).tolist() for b in batches] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


def test_bn_modes_differ_off_the_endpoints_and_endpoint_mode_is_copy_a():
    model, a, b = copies(bn_net)
    x_train, _ = data(600, seed=3)
    x_test, y_test = data(seed=4)
    alphas = np.array([0.0, 0.5, 1.0])
    res = {
        mode: evaluate_path(model, a, b, {"test": (x_test, y_test)}, alphas, bn_mode=mode, calibration=x_train)
        for mode in ("reestimate", "interpolate", "endpoint")
    }
    mids = [r.loss["test"][1] for r in res.values()]
    assert min(abs(p - q) for i, p in enumerate(mids) for q in mids[i + 1 :]) > 1e-4
    own_a, own_b = evaluate(loaded(bn_net, a), x_test, y_test), evaluate(loaded(bn_net, b), x_test, y_test)
    assert res["endpoint"].loss["test"][0] == pytest.approx(own_a.loss, abs=1e-6)
    assert res["endpoint"].error["test"][0] == pytest.approx(own_a.error, abs=1e-6)
    # interpolated statistics are each copy's own at its end; endpoint mode keeps A's even at alpha=1
    assert res["interpolate"].loss["test"][2] == pytest.approx(own_b.loss, abs=1e-6)
    assert abs(res["endpoint"].loss["test"][2] - own_b.loss) > 1e-4
    # re-estimation applies to the endpoints too (an unbiased barrier), so alpha=0 moves off A's stored stats
    assert abs(res["reestimate"].loss["test"][0] - own_a.loss) > 1e-4


def test_bn_auto_mode_and_missing_calibration():
    model, a, b = copies(bn_net)
    x, y = data()
    assert has_batchnorm(model) and not has_batchnorm(mlp())
    with pytest.raises(ValueError, match="calibration"):
        evaluate_path(model, a, b, {"test": (x, y)}, alpha_grid(3))
    assert evaluate_path(model, a, b, {"test": (x, y)}, alpha_grid(3), calibration=x).bn_mode == "reestimate"
    m2, a2, b2 = copies(mlp)
    assert evaluate_path(m2, a2, b2, {"test": (x, y)}, alpha_grid(3), bn_mode="interpolate").bn_mode == "none"


# ----------------------------------------------------------------------------- masks


def _masks(state: dict, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {k: torch.rand(v.shape, generator=g) > 0.5 for k, v in state.items() if k.endswith("weight")}


def test_equal_masks_give_exact_zeros_at_every_alpha():
    _, a, b = copies(mlp)
    mask = _masks(a, 0)
    alphas = alpha_grid(5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # equal masks must not warn
        states = list(path_states(a, b, alphas, (mask, {k: v.clone() for k, v in mask.items()})))
    for alpha, state in zip(alphas, states, strict=True):
        plain = interpolate_state(a, b, float(alpha))
        for k, m in mask.items():
            assert torch.all(state[k][~m] == 0) and not torch.any(torch.signbit(state[k][~m]))
            assert torch.equal(state[k][m], plain[k][m])
        assert torch.equal(state["0.bias"], plain["0.bias"])  # unmasked parameters untouched


def test_masked_path_endpoint_matches_masked_model():
    model, a, b = copies(mlp)
    mask = _masks(a, 0)
    x, y = data()
    res = evaluate_path(model, a, b, {"test": (x, y)}, alpha_grid(3), masks=(mask, mask))
    masked_a = {k: (v * mask[k] if k in mask else v) for k, v in a.items()}
    own = evaluate(loaded(mlp, masked_a), x, y)
    assert res.loss["test"][0] == pytest.approx(own.loss, abs=1e-6)
    unmasked = evaluate(loaded(mlp, a), x, y)
    assert abs(own.loss - unmasked.loss) > 1e-4  # the mask really changes the network


def test_different_masks_warn_and_use_the_union():
    _, a, b = copies(mlp)
    ma, mb = _masks(a, 0), _masks(a, 1)
    with pytest.warns(UserWarning, match="different masks"):
        (mid,) = path_states(a, b, np.array([0.5]), (ma, mb))
    plain = interpolate_state(a, b, 0.5)
    for k in ma:
        union = ma[k] | mb[k]
        assert torch.all(mid[k][~union] == 0)
        assert torch.equal(mid[k][union], plain[k][union])
        assert torch.any(ma[k] & ~mb[k])  # positions pruned in B only are kept: the union is denser


# ----------------------------------------------------------------------------- strategies and storage


@pytest.mark.parametrize(
    ("build", "shape", "kwargs"),
    [(mlp, (8,), {}), (conv_net, (1, 16), {}), (bn_net, (8,), {"bn_mode": "interpolate"})],
    ids=["mlp", "conv1d", "bn-interpolate"],
)
def test_loop_and_batched_agree(build, shape, kwargs):
    model, a, b = copies(build)
    x, y = data(shape=shape)
    alphas = alpha_grid(11)
    loop = evaluate_path(model, a, b, {"test": (x, y)}, alphas, strategy="loop", batch_size=100, **kwargs)
    batched = evaluate_path(model, a, b, {"test": (x, y)}, alphas, strategy="batched", batch_size=100, **kwargs)
    np.testing.assert_allclose(batched.loss["test"], loop.loss["test"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(batched.error["test"], loop.error["test"], rtol=0, atol=1e-6)
    assert np.ptp(loop.loss["test"]) > 1e-3  # a non-trivial curve


def test_auto_strategy_rule():
    assert choose_strategy(mlp(), 1000) == "loop"
    assert choose_strategy(mlp(), 256) == "batched"
    assert choose_strategy(conv_net(), 256) == "loop"
    assert choose_strategy(conv_net(), 64) == "batched"


def test_path_result_round_trip(tmp_path):
    res = PathResult(
        alphas=alpha_grid(4),
        loss={"test": np.array([0.5, 0.9, 0.8, 0.4]), "train": np.array([0.1, 0.3, 0.2, 0.1])},
        error={"test": np.array([0.1, 0.3, 0.2, 0.1]), "train": np.array([0.0, 0.1, 0.05, 0.0])},
        bn_mode="reestimate",
    )
    arrays = res.to_arrays()
    assert set(arrays) == {"alphas", "loss_test", "error_test", "loss_train", "error_train"}
    np.savez(tmp_path / "path.npz", **arrays)
    with np.load(tmp_path / "path.npz") as f:
        back = PathResult.from_arrays(f, "reestimate")
    assert back.bn_mode == "reestimate" and set(back.loss) == {"test", "train"}
    np.testing.assert_array_equal(back.alphas, res.alphas)
    for split in res.loss:
        np.testing.assert_array_equal(back.loss[split], res.loss[split])
        np.testing.assert_array_equal(back.error[split], res.error[split])
    assert back.barriers() == res.barriers()
    assert math.isclose(res.barriers()["test"]["error"], 0.3 - 0.1)
