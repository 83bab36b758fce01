"""The exact Hessian diagonal's Gauss-Newton route: equal to the per-weight products where the network is piecewise
linear in each weight, refused (and still exact, by products) where it is not, and labelled with what was computed."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, hessian

from lmc_core.foundations.config import HessianSpec, ModelConfig
from lmc_core.foundations.seeding import generator
from lmc_core.hessian.diagonal import Diagonal, exact_diagonal, hessian_diagonal
from lmc_core.hessian.ggn import gauss_newton_exact, ggn_diagonal
from lmc_core.hessian.operator import HessianOperator
from lmc_core.models import BasicBlock, _norm_factory, build_model

F64 = torch.float64

# torch.func.hessian (the dense reference) goes through torch.jit.script on torch 2.13.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def batches(shape: tuple[int, ...], classes: int = 3, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Two batches of unequal size (20 + 10), so the size weighting of the mean loss is exercised."""
    g = generator(seed, "test.diagonal.data")
    x, y = torch.randn(30, *shape, generator=g), torch.randint(0, classes, (30,), generator=g)
    return [(x[:20], y[:20]), (x[20:], y[20:])]


def random_masks(model: nn.Module, seed: int = 0) -> dict[str, torch.Tensor]:
    """About half of every weight matrix pruned (biases and norm parameters kept)."""
    g = generator(seed, "test.diagonal.masks")
    return {n: torch.rand(p.shape, generator=g) < 0.5 for n, p in model.named_parameters() if n.endswith("weight") and p.dim() > 1}


def prune(model: nn.Module, masks: dict[str, torch.Tensor]) -> nn.Module:
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n in masks:
                p.mul_(masks[n])
    return model


def with_running_stats(model: nn.Module, shape: tuple[int, ...]) -> nn.Module:
    """Give every BatchNorm non-trivial running statistics (a few train-mode forwards), then eval mode."""
    g = generator(1, "test.diagonal.stats")
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(16, *shape, generator=g) * 2 + 0.5)
    return model.eval()


def compare(
    model: nn.Module, shape: tuple[int, ...], *, mode: str = "eval", masked: bool = True
) -> tuple[Diagonal, torch.Tensor, HessianOperator]:
    """Return (auto route's diagonal, the products' diagonal, the operator) in float64."""
    masks = random_masks(model) if masked else None
    if masks:
        prune(model, masks)
    op = HessianOperator(model, batches(shape), masks=masks, dtype=F64, mode=mode)
    auto = exact_diagonal(op)
    spent = op.hvps
    products = exact_diagonal(op, route="hvp")
    assert products.method == "hvp-exact" and products.products == op.active
    assert spent == auto.products  # the Gauss-Newton entries cost no product
    return auto, products.values, op


def assert_equal_diagonals(a: torch.Tensor, b: torch.Tensor) -> None:
    scale = float(b.abs().max())
    assert scale > 1e-6  # a non-trivial reference
    assert float((a - b).abs().max()) <= 1e-10 * scale


class TinyResNet(nn.Module):
    """The project's BasicBlocks (an identity and a projection shortcut) between a stem and a classifier, 4x4 images."""

    def __init__(self) -> None:
        super().__init__()
        norm = _norm_factory("batch", 2, 1)
        self.stem = nn.Conv2d(1, 2, 3, padding=1, bias=False)
        self.stem_norm = norm(2)
        self.relu = nn.ReLU()
        self.blocks = nn.Sequential(BasicBlock(2, 2, 1, norm), BasicBlock(2, 3, 2, norm))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.blocks(self.relu(self.stem_norm(self.stem(x))))
        return self.fc(torch.flatten(self.pool(out), 1))


# ----------------------------------------------------------------------------- the Gauss-Newton route is exact


def test_mlp_diagonal_is_the_gauss_newton_one_and_equals_the_dense_hessian():
    model = build_model(ModelConfig(arch="mlp", hidden=[5]), (6,), 3, seed=0)  # 6-5-3 ReLU: 53 parameters
    auto, products, op = compare(model, (6,))
    assert auto.method == "ggn-exact" and auto.exact and auto.stderr is None and auto.fallback == {}
    assert auto.ggn == op.active and auto.products == 0
    assert_equal_diagonals(auto.values, products)
    assert torch.equal(auto.values[~op.mask], torch.zeros_like(auto.values[~op.mask]))  # pruned entries are 0
    # and the dense Hessian of the same objective (mean cross-entropy over all 30 examples), by torch.func
    x = torch.cat([b[0] for b in batches((6,))])
    y = torch.cat([b[1] for b in batches((6,))])
    work = model.to(F64)
    params = {n: p.detach() for n, p in work.named_parameters()}
    h = hessian(lambda prm: F.cross_entropy(functional_call(work, prm, (x.to(F64),)), y))(params)
    dense = torch.cat([h[n][n].reshape(p.numel(), p.numel()).diagonal() for n, p in params.items()])
    assert_equal_diagonals(auto.values[op.mask], dense[op.mask])


@pytest.mark.parametrize("pooling", ["max", "avg"])
@pytest.mark.parametrize("dims", [1, 2])
def test_convnet_with_pooling_and_eval_batchnorm_is_gauss_newton_exact(pooling, dims):
    shape = (1, 8) if dims == 1 else (1, 6, 6)
    cfg = ModelConfig(arch="convnet", depth=2, width=2, kernel_size=3, norm="batch", pooling=pooling)
    model = with_running_stats(build_model(cfg, shape, 3, seed=0), shape)
    auto, products, op = compare(model, shape)
    assert auto.method == "ggn-exact" and auto.ggn == op.active and op.hvps == op.active  # only the reference's products
    assert_equal_diagonals(auto.values, products)


def test_residual_blocks_with_eval_batchnorm_are_gauss_newton_exact():
    model = with_running_stats(TinyResNet(), (1, 4, 4))
    auto, products, _ = compare(model, (1, 4, 4))
    assert auto.method == "ggn-exact" and auto.products == 0
    assert_equal_diagonals(auto.values, products)


def test_an_mlp_in_train_mode_has_no_batch_statistics_and_stays_gauss_newton_exact():
    model = build_model(ModelConfig(arch="mlp", hidden=[4]), (5,), 3, seed=1)
    auto, products, _ = compare(model, (5,), mode="train", masked=False)
    assert auto.method == "ggn-exact"
    assert_equal_diagonals(auto.values, products)


def test_a_parameter_subset_and_the_full_subspace_are_honoured():
    # What the sharpness stage asks: prunable weights only, no mask; and mask_subspace=False (pruned coordinates
    # computed but still 0, as m * H(m e_i) is).
    model = build_model(ModelConfig(arch="convnet", depth=1, width=2, kernel_size=3, pooling="max"), (1, 8), 3, seed=2)
    names = ["features.0.weight", "classifier.weight"]
    op = HessianOperator(model, batches((1, 8)), dtype=F64, parameters=names)
    auto = exact_diagonal(op)
    assert auto.method == "ggn-exact" and op.hvps == 0 and auto.values.shape == (op.dim,)
    assert_equal_diagonals(auto.values, exact_diagonal(op, route="hvp").values)
    masks = random_masks(model)
    full = HessianOperator(prune(model, masks), batches((1, 8)), masks=masks, dtype=F64, mask_subspace=False)
    d = exact_diagonal(full)
    assert d.ggn == full.dim and torch.equal(d.values[~full.mask], torch.zeros_like(d.values[~full.mask]))
    assert_equal_diagonals(d.values, exact_diagonal(full, route="hvp").values)


# ----------------------------------------------------------------------------- where it does not hold


def assert_gauss_newton_would_be_wrong(op: HessianOperator, names: list[str], exact: torch.Tensor) -> None:
    """The refused parameters' GGN diagonal really differs from the Hessian's: the refusal is needed, not just safe."""
    ggn = ggn_diagonal(op.model, op.batches, names)
    sel = torch.cat([exact[a:b] for n, a, b in zip(op.names, op.offsets[:-1], op.offsets[1:], strict=True) if n in names])
    assert float((ggn - sel).abs().max()) > 1e-3 * float(sel.abs().max())


def test_tanh_falls_back_to_products_for_the_weights_before_it():
    model = nn.Sequential(nn.Flatten(), nn.Linear(6, 4), nn.Tanh(), nn.Linear(4, 3))
    auto, products, op = compare(model, (6,))
    assert auto.method == "ggn+hvp-exact"
    assert set(auto.fallback) == {"1.weight", "1.bias"} and "Tanh" in auto.fallback["1.weight"]
    assert_equal_diagonals(auto.values, products)  # still exact: products for the first layer, GGN for the last
    assert_gauss_newton_would_be_wrong(op, ["1.weight", "1.bias"], products)


def test_instance_norm_falls_back_before_the_last_norm_only():
    cfg = ModelConfig(arch="convnet", depth=2, width=2, kernel_size=3, norm="instance", pooling="max")
    model = build_model(cfg, (1, 8), 3, seed=0)
    auto, products, op = compare(model, (1, 8))
    assert auto.method == "ggn+hvp-exact"
    # conv 0, norm 0 and conv 1 sit before the second GroupNorm; its own scale and shift and the classifier do not
    before = {"features.0.weight", "features.0.bias", "features.1.weight", "features.1.bias", "features.4.weight", "features.4.bias"}
    assert set(auto.fallback) == before
    assert_equal_diagonals(auto.values, products)
    assert_gauss_newton_would_be_wrong(op, ["features.0.weight", "features.4.weight"], products)


def test_train_mode_batchnorm_falls_back_everywhere():
    cfg = ModelConfig(arch="convnet", depth=1, width=2, kernel_size=3, norm="batch")
    model = build_model(cfg, (1, 8), 3, seed=0)
    auto, products, op = compare(model, (1, 8), mode="train")
    assert auto.method == "hvp-exact" and auto.ggn == 0 and auto.products == op.active
    assert set(auto.fallback) == set(op.names) and "batch's own statistics" in auto.fallback["classifier.weight"]
    assert torch.equal(auto.values, products)


class Shared(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(3, 3)
        self.out = nn.Linear(3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.layer(torch.relu(self.layer(x)))))


class Tied(nn.Module):
    """One weight matrix in two layers (named once by named_parameters): quadratic in each of its entries."""

    def __init__(self) -> None:
        super().__init__()
        self.first = nn.Linear(3, 3)
        self.second = nn.Linear(3, 3, bias=False)
        self.second.weight = self.first.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.second(torch.relu(self.first(x)))


class Gated(nn.Module):
    """h * h is quadratic in the first layer's weights; h * 2 is not."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(3, 3)
        self.b = nn.Linear(3, 3)
        self.out = nn.Linear(3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.a(x)
        return self.out(self.b(h * h) * 2)


class Functional(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(3, 3)
        self.scale = nn.Parameter(torch.ones(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.layer(x)) * self.scale


class Branchy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x) if x.sum() > 0 else -self.layer(x)


def test_the_check_is_conservative_about_sharing_products_unknown_ops_and_untraceable_models():
    shared = gauss_newton_exact(Shared())
    assert "2 times" in str(shared["layer.weight"]) and shared["out.weight"] is None
    tied = gauss_newton_exact(Tied())
    assert "2 times" in str(tied["first.weight"]) and tied["first.bias"] is None
    gated = gauss_newton_exact(Gated())
    assert "mul" in str(gated["a.weight"]) and gated["b.weight"] is None and gated["out.bias"] is None
    functional = gauss_newton_exact(Functional())
    assert "gelu" in str(functional["layer.weight"]) and "not by a layer" in str(functional["scale"])
    branchy = gauss_newton_exact(Branchy())
    assert "torch.fx" in str(branchy["layer.weight"])
    # and each of them still gets its exact diagonal, by products where refused
    for model in (Shared(), Tied(), Gated(), Functional()):
        auto, products, _ = compare(model, (3,), masked=False)
        assert auto.method != "ggn-exact"
        assert_equal_diagonals(auto.values, products)


def test_active_dropout_is_refused():
    model = nn.Sequential(nn.Linear(3, 3), nn.Dropout(0.5), nn.Linear(3, 3)).train()
    assert all("random" in str(r) for r in gauss_newton_exact(model).values())
    assert all(r is None for r in gauss_newton_exact(model.eval()).values())


# ----------------------------------------------------------------------------- the estimate and the default


def test_an_estimate_is_labelled_with_its_standard_errors():
    model = build_model(ModelConfig(arch="mlp", hidden=[5]), (6,), 3, seed=0)
    op = HessianOperator(model, batches((6,)), dtype=F64)
    est = hessian_diagonal(op, "hutchinson", samples=400, seed=3)
    assert est.method == "hutchinson" and not est.exact and est.samples == 400
    assert est.stderr is not None and est.stderr.shape == (op.dim,)
    exact = hessian_diagonal(op, "exact")
    assert exact.method == "ggn-exact" and exact.stderr is None
    inside = (est.values - exact.values).abs() <= 4 * est.stderr + 1e-12
    assert float(inside.double().mean()) >= 0.95  # the errors the estimate states cover its actual errors
    summary = est.summary()
    assert summary["stderr_mean"] == pytest.approx(float(est.stderr.mean())) and summary["samples"] == 400
    with pytest.raises(ValueError, match="kind must be one of"):
        hessian_diagonal(op, "ggn")


def test_the_default_diagonal_is_exact():
    assert HessianSpec().diagonal == "exact"
