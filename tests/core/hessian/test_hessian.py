"""Tests of the matrix-free Hessian and its estimators against dense float64 references on tiny models."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, hessian

from lmc_core.foundations.config import ModelConfig
from lmc_core.foundations.seeding import generator
from lmc_core.hessian.density import Density, slq_density, slq_moments
from lmc_core.hessian.diagonal import exact_diagonal, hutchinson_diagonal
from lmc_core.hessian.eigen import Eigen, lanczos
from lmc_core.hessian.operator import HessianOperator, rademacher
from lmc_core.hessian.trace import Estimate, hutchinson_trace, hutchpp_trace, layer_traces, trace
from lmc_core.models import build_model
from lmc_core.prune.magnitude import prunable_names

F64 = torch.float64

# torch.func.hessian (the dense references only) goes through torch.jit.script on torch 2.13.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # Tiny models on 2 shared cores: one intra-op thread avoids oversubscription (10x faster here).
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


# ----------------------------------------------------------------------------- fixtures


def mlp(seed: int = 0) -> nn.Module:
    return build_model(ModelConfig(arch="mlp", hidden=[5]), (6,), 3, seed=seed)  # 6-5-3: 53 parameters


def conv(seed: int = 0, norm: str = "none") -> nn.Module:
    # Conv1d(1, 2, 3) (+ BatchNorm1d(2)) -> ReLU -> Linear(12, 3): 47 (51) parameters
    return build_model(ModelConfig(arch="convnet", depth=1, width=2, kernel_size=3, norm=norm), (1, 6), 3, seed=seed)


def data(n: int, shape: tuple[int, ...], seed: int = 0, shift: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    g = generator(seed, "test.hessian.data")
    return torch.randn(n, *shape, generator=g) + shift, torch.randint(0, 3, (n,), generator=g)


def split(x: torch.Tensor, y: torch.Tensor, sizes: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return list(zip(x.split(sizes), y.split(sizes), strict=True))


def dense_hessian(model: nn.Module, batches, mode: str = "eval", masks=None) -> torch.Tensor:
    """Return sum_b (n_b / N) H_b in float64 by torch.func.hessian (train mode: batch statistics, no running stats)."""
    mm = copy.deepcopy(model).to(F64).train(mode == "train")
    if mode == "train":
        # Batch statistics written out by hand: torch.func.hessian through native batch_norm in
        # training mode disagreed with finite differences of the gradient here (torch 2.13).
        for parent in list(mm.modules()):
            for name, child in list(parent.named_children()):
                if isinstance(child, nn.modules.batchnorm._BatchNorm):
                    setattr(parent, name, ManualBatchNorm(child))
    params = {n: p.detach() for n, p in mm.named_parameters()}
    flat = torch.cat([p.reshape(-1) for p in params.values()])

    def unflat(v):
        out, o = {}, 0
        for n, p in params.items():
            out[n] = v[o : o + p.numel()].reshape(p.shape)
            o += p.numel()
        return out

    total = sum(len(y) for _, y in batches)
    h = torch.zeros(flat.numel(), flat.numel(), dtype=F64)
    for x, y in batches:
        h += len(y) / total * hessian(lambda v, x=x, y=y: F.cross_entropy(functional_call(mm, unflat(v), (x.to(F64),)), y))(flat)
    if masks is not None:
        m = flat_mask(model, masks).to(F64)
        h = m[:, None] * h * m[None, :]
    return h


class ManualBatchNorm(nn.Module):
    """Training-mode BatchNorm from elementary ops (biased batch variance), keeping the weight and bias names."""

    def __init__(self, bn: nn.modules.batchnorm._BatchNorm):
        super().__init__()
        self.weight, self.bias, self.eps = bn.weight, bn.bias, bn.eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        mean = x.mean(dims, keepdim=True)
        var = (x - mean).pow(2).mean(dims, keepdim=True)
        return (x - mean) / torch.sqrt(var + self.eps) * self.weight.view(shape) + self.bias.view(shape)


def flat_mask(model: nn.Module, masks) -> torch.Tensor:
    return torch.cat([masks[n].reshape(-1) if n in masks else torch.ones(p.numel(), dtype=torch.bool) for n, p in model.named_parameters()])


def half_masks(model: nn.Module, seed: int = 0) -> dict[str, torch.Tensor]:
    g = generator(seed, "test.hessian.masks")
    params = dict(model.named_parameters())
    return {n: torch.rand(params[n].shape, generator=g) < 0.5 for n in prunable_names(model)}


def snapshot(model: nn.Module) -> dict:
    return {
        "params": {n: p.detach().clone() for n, p in model.named_parameters()},
        "buffers": {n: b.clone() for n, b in model.named_buffers()},
        "requires_grad": {n: p.requires_grad for n, p in model.named_parameters()},
        "grads": {n: p.grad for n, p in model.named_parameters()},
        "training": [m.training for m in model.modules()],
        "dtypes": {n: p.dtype for n, p in model.named_parameters()},
    }


def assert_unchanged(model: nn.Module, snap: dict) -> None:
    now = snapshot(model)
    assert now["requires_grad"] == snap["requires_grad"]
    assert now["training"] == snap["training"]
    assert now["dtypes"] == snap["dtypes"]
    assert all(g is None for g in now["grads"].values())
    for n, p in snap["params"].items():
        assert torch.equal(now["params"][n], p), n
    for n, b in snap["buffers"].items():
        assert torch.equal(now["buffers"][n], b), n


def close(a: torch.Tensor, b: torch.Tensor, rtol: float = 1e-8) -> bool:
    return bool((a - b).abs().max() <= rtol * b.abs().max())


# ----------------------------------------------------------------------------- operator


@pytest.mark.parametrize("build,shape", [(mlp, (6,)), (conv, (1, 6))])
def test_matvec_matches_dense_for_vectors_and_blocks(build, shape):
    model = build()
    batches = [data(24, shape)]
    h = dense_hessian(model, batches)
    op = HessianOperator(model, batches, dtype=F64)
    assert op.dim == h.shape[0] == sum(p.numel() for p in model.parameters()) and op.active == op.dim
    g = generator(1, "test")
    v = torch.randn(op.dim, generator=g, dtype=F64)
    block = torch.randn(op.dim, 7, generator=g, dtype=F64)
    assert close(op.matvec(v), h @ v)
    assert op.hvps == 1
    hb = op.matvec(block)
    assert hb.shape == (op.dim, 7) and close(hb, h @ block)
    assert op.hvps == 8
    assert close(op.matvec(block[:, :1]), h @ block[:, :1])
    assert close(op.to_dense(batch=16), h)


@pytest.mark.parametrize("block", ["loop", "vmap"])
@pytest.mark.parametrize("build,shape", [(mlp, (6,)), (conv, (1, 6))])
def test_block_products_are_exact_by_either_strategy_and_never_switch(build, shape, block):
    """Every block product equals the dense one, and the strategy stays the one asked for: no timing decides the
    arithmetic (loop and vmap agree only to rounding, so a timed choice would make results depend on load)."""
    model = build()
    batches = split(*data(30, shape, seed=3), [16, 14])
    h = dense_hessian(model, batches)
    op = HessianOperator(model, batches, dtype=F64, block=block)
    g = generator(2, "test")
    for i in range(4):
        block_v = torch.randn(op.dim, 5, generator=g, dtype=F64)
        assert close(op.matvec(block_v), h @ block_v), i
        assert op.block_strategy == block
    assert op.hvps == 20


def test_block_strategy_defaults_to_the_loop_and_is_checked():
    batches = split(*data(30, (6,), seed=3), [16, 14])
    assert HessianOperator(mlp(), batches).block_strategy == "loop"
    with pytest.raises(ValueError, match="block must be one of"):
        HessianOperator(mlp(), batches, block="fast")


def test_multi_batch_is_size_weighted_hessian_of_concatenated_data():
    model = mlp()
    x, y = data(20, (6,))
    batches = split(x, y, [3, 10, 7])
    h_all = dense_hessian(model, [(x, y)])  # the mean loss over the union, one forward
    op = HessianOperator(model, batches, dtype=F64)
    v = torch.randn(op.dim, 3, generator=generator(2, "test"), dtype=F64)
    assert close(op.matvec(v), h_all @ v)
    # equal weighting of the batches (eigenthings' choice) would be a different matrix
    h_equal = sum(dense_hessian(model, [b]) for b in batches) / 3
    assert not close(h_equal @ v, h_all @ v, rtol=1e-3)


def test_float32_operator_close_to_float64():
    model = mlp()
    batches = [data(24, (6,))]
    v = torch.randn(53, 4, generator=generator(3, "test"), dtype=F64)
    h64 = HessianOperator(model, batches, dtype=F64).matvec(v)
    h32 = HessianOperator(model, batches).matvec(v)
    assert h32.dtype == torch.float32
    assert close(h32.double(), h64, rtol=1e-5)


def test_masked_products_live_in_the_unpruned_subspace():
    model = mlp()
    batches = [data(24, (6,))]
    masks = half_masks(model)
    m = flat_mask(model, masks)
    h = dense_hessian(model, batches)
    op = HessianOperator(model, batches, masks=masks, dtype=F64)
    assert op.dim == 53 and op.active == int(m.sum()) < 53
    v = torch.randn(op.dim, 5, generator=generator(4, "test"), dtype=F64)
    out = op.matvec(v)
    assert torch.equal(out[~m], torch.zeros_like(out[~m]))
    mm = m.to(F64)
    assert close(out, (mm[:, None] * h * mm[None, :]) @ v)
    # mask_subspace=False: same products, estimators over all coordinates
    full = HessianOperator(model, batches, masks=masks, dtype=F64, mask_subspace=False)
    assert full.active == full.dim == 53 and torch.equal(full.matvec(v), out)


def test_parameter_subset_is_the_matching_block():
    model = mlp()
    batches = [data(24, (6,))]
    h = dense_hessian(model, batches)
    names = [n for n, _ in model.named_parameters()]
    pick = [names[3], names[0]]  # any order in, named_parameters order out
    op = HessianOperator(model, batches, dtype=F64, parameters=pick)
    assert op.names == [names[0], names[3]]
    idx = torch.cat([torch.arange(0, 30), torch.arange(50, 53)])
    v = torch.randn(op.dim, 2, generator=generator(5, "test"), dtype=F64)
    assert op.dim == 33 and close(op.matvec(v), h[idx][:, idx] @ v)
    with pytest.raises(KeyError):
        HessianOperator(model, batches, parameters=["nope"])


def test_batchnorm_eval_and_train_modes_match_their_dense_hessians():
    model = conv(norm="batch")
    for mod in model.modules():
        if isinstance(mod, nn.BatchNorm1d):
            mod.running_mean.uniform_(-0.5, 0.5, generator=generator(6, "test"))
            mod.running_var.uniform_(0.5, 2.0, generator=generator(7, "test"))
    model.train()
    x, y = data(20, (1, 6))
    batches = split(x, y, [12, 8])
    snap = snapshot(model)
    v = torch.randn(sum(p.numel() for p in model.parameters()), 3, generator=generator(8, "test"), dtype=F64)
    results = {}
    for mode in ("eval", "train"):
        op = HessianOperator(model, batches, dtype=F64, mode=mode)
        results[mode] = op.matvec(v)
        assert close(results[mode], dense_hessian(model, batches, mode=mode) @ v)
        assert_unchanged(model, snap)  # train mode updated the running stats of a private copy only
    assert not close(results["eval"], results["train"], rtol=1e-3)


@pytest.mark.parametrize("affine,track", [(True, True), (False, True), (True, False)])
def test_eval_batchnorm_as_affine_map_matches_dense(affine, track):
    """Eval mode writes running-statistics BatchNorm as x * s + t (a cheaper double backward); batch-statistics BN is left alone."""
    torch.manual_seed(0)  # module init only
    model = nn.Sequential(nn.Linear(6, 4), nn.BatchNorm1d(4, affine=affine, track_running_stats=track), nn.ReLU(), nn.Linear(4, 3))
    if track:
        model[1].running_mean.uniform_(-0.5, 0.5, generator=generator(6, "test"))
        model[1].running_var.uniform_(0.5, 2.0, generator=generator(7, "test"))
    if affine:
        model[1].weight.data.uniform_(0.5, 1.5, generator=generator(9, "test"))
    batches = [data(20, (6,))]
    snap = snapshot(model)
    op = HessianOperator(model, batches, dtype=F64, mode="eval")
    assert op.names == [n for n, _ in model.named_parameters()]
    # Without running statistics BN normalises with batch statistics in eval mode too: the reference is
    # the hand-written batch-statistics Hessian (dense_hessian's train branch).
    assert close(op.to_dense(), dense_hessian(model, batches, mode="eval" if track else "train"))
    assert_unchanged(model, snap)


def test_caller_model_unchanged_by_every_function():
    model = conv(norm="batch")
    model.train()
    model.features[0].bias.requires_grad_(False)
    x, y = data(16, (1, 6))
    batches = split(x, y, [10, 6])
    masks = half_masks(model)
    snap = snapshot(model)
    rng = torch.random.get_rng_state()
    for mode, dtype in (("eval", torch.float32), ("train", F64)):
        op = HessianOperator(model, batches, masks=masks, dtype=dtype, mode=mode)
        assert_unchanged(model, snap)
        lanczos(op, 2, max_iter=10)
        lanczos(op, 2, max_iter=3, block=2)
        hutchinson_trace(op, 4)
        hutchpp_trace(op, 9)
        trace(op, max_hvps=20)
        layer_traces(op, 4)
        hutchinson_diagonal(op, 4)
        exact_diagonal(op)
        slq_moments(slq_density(op, runs=2, steps=5))
        assert_unchanged(model, snap)
    assert torch.equal(torch.random.get_rng_state(), rng)  # seeded generators only, never the global RNG
    model.eval()
    snap = snapshot(model)
    HessianOperator(model, batches, mode="train").matvec(torch.ones(51))
    assert_unchanged(model, snap)


# ----------------------------------------------------------------------------- lanczos


def ordered(ev: torch.Tensor, k: int, which: str) -> torch.Tensor:
    if which == "LA":
        return ev.flip(0)[:k]
    if which == "SA":
        return ev[:k]
    return ev[ev.abs().argsort(descending=True)][:k]


@pytest.mark.parametrize("block", [1, 3])
@pytest.mark.parametrize("which", ["LA", "LM", "SA"])
@pytest.mark.parametrize("build,shape", [(mlp, (6,)), (conv, (1, 6))])
def test_lanczos_matches_dense_eigenvalues(which, build, shape, block):
    model = build()
    batches = split(*data(30, shape), [20, 10])
    h = dense_hessian(model, batches)
    ev = torch.linalg.eigvalsh(h)
    op = HessianOperator(model, batches, dtype=F64)
    tol = 1e-10
    eig = lanczos(op, 4, which=which, tol=tol, seed=1, block=block)
    assert isinstance(eig, Eigen) and eig.converged
    ref = ordered(ev, 4, which)
    assert torch.allclose(eig.values, ref, rtol=1e-6, atol=1e-6 * float(ev.abs().max()))
    scale = float(ev.abs().max())
    true_res = (h @ eig.vectors - eig.vectors * eig.values).norm(dim=0)
    assert bool((true_res <= 10 * tol * scale).all()) and bool((eig.residuals <= tol * scale).all())
    assert torch.allclose(eig.vectors.T @ eig.vectors, torch.eye(4, dtype=F64), atol=1e-8)
    assert eig.hvps == block * eig.iterations <= op.dim and op.hvps == eig.hvps


def test_lanczos_default_tolerance_and_determinism():
    model = mlp()
    batches = [data(40, (6,), shift=2.0)]
    h = dense_hessian(model, batches)
    ev = torch.linalg.eigvalsh(h)
    op = HessianOperator(model, batches, dtype=F64)
    a = lanczos(op, 2, seed=3)
    b = lanczos(op, 2, seed=3)
    assert a.converged and torch.equal(a.values, b.values) and a.hvps == b.hvps
    assert a.iterations < op.dim  # stopped on the residual rule, not by exhausting the space
    true_res = (h @ a.vectors - a.vectors * a.values).norm(dim=0)
    assert bool((true_res <= 1.01e-3 * float(ev.abs().max())).all())
    assert torch.allclose(a.values, ev.flip(0)[:2], rtol=1e-3)


def test_lanczos_masked_finds_the_subspace_spectrum():
    model = mlp()
    batches = [data(30, (6,), shift=1.0)]
    masks = half_masks(model)
    m = flat_mask(model, masks)
    h = dense_hessian(model, batches)
    sub = torch.linalg.eigvalsh(h[m][:, m])
    op = HessianOperator(model, batches, masks=masks, dtype=F64)
    for which, block in (("LA", 1), ("SA", 1), ("LA", 4)):
        eig = lanczos(op, 3, which=which, tol=1e-10, block=block)
        assert torch.allclose(eig.values, ordered(sub, 3, which), rtol=1e-6, atol=1e-6 * float(sub.abs().max()))
        assert torch.equal(eig.vectors[~m], torch.zeros_like(eig.vectors[~m]))
    with pytest.raises(ValueError, match="k must be between 1 and the subspace dimension"):
        lanczos(op, op.active + 1)


def test_lanczos_full_spectrum_with_repeated_eigenvalues(dominant):
    """Many exact zero eigenvalues: a single Krylov space holds one; the restarts find them all."""
    _, _, op, h = dominant
    ev = torch.linalg.eigvalsh(h)
    assert int((ev.abs() < 1e-10).sum()) > 10
    eig = lanczos(op, op.dim, which="LA", tol=1e-10)
    assert eig.converged and eig.iterations == op.dim
    assert torch.allclose(eig.values, ev.flip(0), atol=1e-9 * float(ev.abs().max()))
    assert torch.allclose(eig.vectors.T @ eig.vectors, torch.eye(op.dim, dtype=F64), atol=1e-8)


def test_lanczos_float32_operator():
    model = mlp()
    batches = [data(40, (6,), shift=2.0)]
    ev = torch.linalg.eigvalsh(dense_hessian(model, batches))
    eig = lanczos(HessianOperator(model, batches), 3, which="LM", tol=1e-4)
    assert eig.values.dtype == torch.float32 and eig.converged
    assert torch.allclose(eig.values.double(), ordered(ev, 3, "LM"), rtol=1e-3)
    full = lanczos(HessianOperator(model, batches), 53, tol=1e-5)  # restarts detected at float32 round-off
    assert torch.allclose(full.values.double(), ev.flip(0), atol=1e-5 * float(ev.abs().max()))
    dens = slq_density(HessianOperator(model, batches), runs=4, steps=100)
    assert max(dens.steps) < 53 and torch.allclose(dens.weights.sum(1), torch.ones(4, dtype=F64), atol=1e-5)


class MatrixOperator:
    """A fixed symmetric matrix with the attributes `lanczos` reads (dim, active, dtype, device, subspace, hvps, matvec)."""

    def __init__(self, a: torch.Tensor):
        self.a, self.dim, self.active = a, a.shape[0], a.shape[0]
        self.dtype, self.device, self.subspace, self.hvps = a.dtype, a.device, None, 0

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        self.hvps += 1 if v.dim() == 1 else v.shape[1]
        return self.a @ v


def with_spectrum(values: list[float], seed: int) -> torch.Tensor:
    g = generator(seed, "test.hessian.spectrum")
    q, _ = torch.linalg.qr(torch.randn(len(values), len(values), generator=g, dtype=F64))
    return (q * torch.tensor(values, dtype=F64)) @ q.T


@pytest.mark.parametrize("tol", [1e-3, 1e-6])
def test_lanczos_eigenvalue_criterion_against_dense_models(tol):
    """Top-4 over 7 tiny models: both rules within tol * |lambda_1| of the dense spectrum, in order.

    The eigenvalue rule never needs more steps.
    """
    cases = [(mlp(s), split(*data(30, (6,), seed=s, shift=s % 2), [20, 10])) for s in range(4)]
    cases += [(conv(s), [data(24, (1, 6), seed=s)]) for s in range(3)]
    saved = 0
    for model, batches in cases:
        ev = torch.linalg.eigvalsh(dense_hessian(model, batches))
        ref, lam1 = ev.flip(0)[:4], float(ev.abs().max())
        op = HessianOperator(model, batches, dtype=F64)
        res = lanczos(op, 4, tol=tol, seed=2)
        eig = lanczos(op, 4, tol=tol, seed=2, criterion="eigenvalue")
        assert eig.converged and eig.criterion == "eigenvalue" and res.criterion == "residual"
        for e in (res, eig):
            assert float((e.values - ref).abs().max()) <= tol * lam1
        assert bool((eig.bounds <= tol * float(eig.values.abs().max())).all())
        assert bool((res.bounds <= res.residuals).all())
        assert eig.iterations <= res.iterations  # the same iterates, a weaker test
        saved += res.hvps - eig.hvps
    assert saved > 0  # it does stop earlier somewhere


@pytest.mark.parametrize("seed", range(4))
def test_lanczos_criteria_clustered_and_repeated(seed):
    """Clustered top values (gaps 5e-4): the residual rule finds them all; the eigenvalue rule's values are each near an eigenvalue.

    Repeated values: a block of at least the multiplicity finds every copy under both rules.
    """
    rest = torch.linspace(-1.0, 3.0, 70, dtype=F64).tolist()
    clustered = with_spectrum([10.0, 9.9995, 9.999, 9.98, 6.0, *rest], seed)
    ev = torch.linalg.eigvalsh(clustered).flip(0)
    for tol in (1e-3, 1e-5):
        res = lanczos(MatrixOperator(clustered), 5, tol=tol, seed=seed)
        assert res.converged and float((res.values - ev[:5]).abs().max()) <= tol * 10.0
        eig = lanczos(MatrixOperator(clustered), 5, tol=tol, seed=seed, criterion="eigenvalue")
        assert eig.iterations <= res.iterations
        # Each value is within tol of *some* eigenvalue; at tol 1e-3 with seed 2 it stops (18 steps vs
        # 24) before 9.999 has a Ritz value and returns 2.997 fifth: the missed-eigenvalue risk of an
        # early stop, documented in `lanczos`.
        nearest = (eig.values.unsqueeze(1) - ev.unsqueeze(0)).abs().min(dim=1).values
        assert float(nearest.max()) <= tol * 10.0
    repeated = with_spectrum([10.0, 10.0, 10.0, 7.0, 7.0, 4.0, *rest], seed)
    ev = torch.linalg.eigvalsh(repeated).flip(0)
    for crit in ("residual", "eigenvalue"):
        eig = lanczos(MatrixOperator(repeated), 6, tol=1e-4, seed=seed, block=3, criterion=crit)
        assert eig.converged and float((eig.values - ev[:6]).abs().max()) <= 1e-4 * 10.0
        assert float(eig.bounds.max()) <= 1e-4 * 10.0
    with pytest.raises(ValueError, match="criterion must be one of"):
        lanczos(MatrixOperator(repeated), 2, criterion="ritz")


def test_invalid_arguments():
    model = mlp()
    batches = [data(8, (6,))]
    with pytest.raises(ValueError, match="mode must be one of"):
        HessianOperator(model, batches, mode="test")
    with pytest.raises(ValueError, match="the Hessian needs at least one"):
        HessianOperator(model, [])
    with pytest.raises(ValueError, match=r"mask 'layers\.1\.weight' has shape"):
        HessianOperator(model, batches, masks={"layers.1.weight": torch.ones(3, 3, dtype=torch.bool)})
    op = HessianOperator(model, batches)
    with pytest.raises(ValueError, match="expected a vector"):
        op.matvec(torch.ones(52))
    with pytest.raises(ValueError, match="which must be one of"):
        lanczos(op, 2, which="BE")
    with pytest.raises(ValueError, match="Ritz pairs need more than 13 steps"):
        lanczos(op, 53, block=4)  # 13 whole blocks of 4 span only 52 of 53 dimensions
    with pytest.raises(ValueError, match="method must be one of"):
        trace(op, method="xtrace")
    with pytest.raises(ValueError, match="at least 4 products"):
        hutchpp_trace(op, 3)


# ----------------------------------------------------------------------------- trace


@pytest.fixture(scope="module")
def dominant():
    """A 6-5-3 MLP on shifted inputs: two eigenvalues dominate (2.9, 2.0 vs 0.5 and below)."""
    model = mlp()
    batches = [data(40, (6,), shift=2.0)]
    op = HessianOperator(model, batches, dtype=F64)
    h = dense_hessian(model, batches)
    return model, batches, op, h


def test_hutchinson_unbiased_and_stderr_calibrated(dominant):
    _, _, op, h = dominant
    exact = float(h.trace())
    ests = [hutchinson_trace(op, 30, seed=s) for s in range(40)]
    assert all(isinstance(e, Estimate) and e.samples == 30 and e.hvps == 30 for e in ests)
    vals = torch.tensor([e.value for e in ests], dtype=F64)
    assert abs(float(vals.mean()) - exact) <= 3 * float(vals.std()) / math.sqrt(40)
    covered = sum(abs(e.value - exact) <= 3 * e.stderr for e in ests)
    assert covered >= 34  # ~99.7% nominal; stderr is itself estimated from 30 probes
    # the reported stderr matches the spread across seeds (within a factor 1.5)
    assert 1 / 1.5 <= float(torch.tensor([e.stderr for e in ests]).mean()) / float(vals.std()) <= 1.5


def test_hutchpp_unbiased_and_beats_hutchinson_at_equal_hvps(dominant):
    _, _, op, h = dominant
    exact = float(h.trace())
    pp = [hutchpp_trace(op, 30, seed=s) for s in range(40)]
    assert all(e.hvps == 30 for e in pp)
    hu = torch.tensor([hutchinson_trace(op, 30, seed=s).value for s in range(40)], dtype=F64)
    vals = torch.tensor([e.value for e in pp], dtype=F64)
    assert abs(float(vals.mean()) - exact) <= 3 * float(vals.std()) / math.sqrt(40) + 1e-12
    rmse_pp = float((vals - exact).pow(2).mean().sqrt())
    rmse_hu = float((hu - exact).pow(2).mean().sqrt())
    assert rmse_pp < rmse_hu / 3
    assert sum(abs(e.value - exact) <= 3 * e.stderr for e in pp) >= 34


def test_hutchpp_masked_is_the_subspace_trace():
    model = mlp()
    batches = [data(30, (6,), shift=1.0)]
    masks = half_masks(model)
    m = flat_mask(model, masks)
    h = dense_hessian(model, batches)
    exact = float(h[m][:, m].trace())
    op = HessianOperator(model, batches, masks=masks, dtype=F64)
    vals = torch.tensor([hutchpp_trace(op, 24, seed=s).value for s in range(30)], dtype=F64)
    assert abs(float(vals.mean()) - exact) <= 3 * float(vals.std()) / math.sqrt(30) + 1e-12
    # a sketch as large as the subspace makes Hutch++ exact
    full = trace(op, method="hutch++", sketch=op.active, max_hvps=2 * op.active + 16)
    assert full.value == pytest.approx(exact, rel=1e-10)


def test_adaptive_trace_stops_on_relative_stderr_or_budget(dominant):
    _, _, op, h = dominant
    exact = float(h.trace())
    for method in ("hutchinson", "hutch++"):
        est = trace(op, rel_tol=0.05, max_hvps=2000, seed=1, method=method)
        assert est.stderr <= 0.05 * abs(est.value) and est.hvps <= 2000
        assert abs(est.value - exact) <= 4 * est.stderr + 1e-9
        capped = trace(op, rel_tol=1e-9, max_hvps=40, seed=1, method=method)
        assert capped.hvps == 40  # budget reached, not the (unreachable) tolerance
    # Hutch++ reaches the same tolerance with fewer products on a dominated spectrum
    hu = trace(op, rel_tol=0.02, max_hvps=5000, seed=2, method="hutchinson", batch=8)
    pp = trace(op, rel_tol=0.02, max_hvps=5000, seed=2, method="hutch++", batch=8, sketch=8)
    assert pp.hvps < hu.hvps


def test_layer_traces_sum_to_the_total_and_match_blocks(dominant):
    model, _, op, h = dominant
    lt = layer_traces(op, samples=64, seed=5)
    assert list(lt) == [n for n, _ in model.named_parameters()]
    total = hutchinson_trace(op, 64, seed=5)  # the same probes
    assert sum(e.value for e in lt.values()) == pytest.approx(total.value, rel=1e-12)
    for (a, b), e in zip(zip(op.offsets[:-1], op.offsets[1:], strict=True), lt.values(), strict=True):
        exact = float(h[a:b, a:b].trace())
        assert abs(e.value - exact) <= 4 * e.stderr + 1e-12


def test_estimators_are_reproducible_from_their_seed(dominant):
    _, _, op, _ = dominant
    assert hutchinson_trace(op, 8, seed=4) == hutchinson_trace(op, 8, seed=4)
    assert hutchpp_trace(op, 12, seed=4) == hutchpp_trace(op, 12, seed=4)
    assert hutchinson_trace(op, 8, seed=4).value != hutchinson_trace(op, 8, seed=5).value
    a, b = slq_density(op, runs=3, steps=10, seed=4), slq_density(op, runs=3, steps=10, seed=4)
    assert torch.equal(a.nodes, b.nodes) and torch.equal(a.density, b.density)
    d1, d2 = hutchinson_diagonal(op, 8, seed=4)[0], hutchinson_diagonal(op, 8, seed=4)[0]
    assert torch.equal(d1, d2)


# ----------------------------------------------------------------------------- diagonal


@pytest.mark.parametrize("route", ["hvp", "auto"])
def test_exact_diagonal_equals_dense_diagonal(route):
    # Conv1d -> ReLU -> Linear: piecewise linear in every weight, so "auto" takes the Gauss-Newton route (no products).
    model = conv()
    batches = split(*data(30, (1, 6)), [20, 10])
    h = dense_hessian(model, batches)
    op = HessianOperator(model, batches, dtype=F64)
    d = exact_diagonal(op, batch=16, route=route)
    assert d.method == ("hvp-exact" if route == "hvp" else "ggn-exact") and d.exact
    assert torch.allclose(d.values, h.diagonal(), rtol=1e-12, atol=1e-15)
    assert op.hvps == (op.dim if route == "hvp" else 0)
    masks = half_masks(model)
    m = flat_mask(model, masks)
    mop = HessianOperator(model, batches, masks=masks, dtype=F64)
    md = exact_diagonal(mop, route=route).values
    assert torch.equal(md[~m], torch.zeros_like(md[~m]))
    assert torch.allclose(md[m], h.diagonal()[m], rtol=1e-12, atol=1e-15)
    assert mop.hvps == (mop.active if route == "hvp" else 0)


def test_hutchinson_diagonal_converges_with_calibrated_stderr(dominant):
    _, _, op, h = dominant
    exact = h.diagonal()
    off = (h.pow(2).sum(1) - exact.pow(2)).sqrt()  # per-probe std of entry j: sqrt(sum_{k != j} H_jk^2)
    small, _ = hutchinson_diagonal(op, 100, seed=0, batch=100)
    big, se = hutchinson_diagonal(op, 3200, seed=0, batch=400)
    err_small = float((small - exact).norm() / exact.norm())
    err_big = float((big - exact).norm() / exact.norm())
    assert err_big < err_small / 3  # ~ 1 / sqrt(32) = 0.18 expected
    live = off > 1e-8 * float(off.max())
    ratio = se[live] / (off[live] / math.sqrt(3200))
    assert 0.8 < float(ratio.median()) < 1.2
    assert float(((big - exact).abs() <= 4 * se + 1e-12).double().mean()) >= 0.95


# ----------------------------------------------------------------------------- spectral density


def test_slq_density_integrates_to_one_and_is_exact_quadrature(dominant):
    _, _, op, h = dominant
    ev = torch.linalg.eigvalsh(h)
    dens = slq_density(op, runs=8, steps=200, seed=0)
    assert isinstance(dens, Density) and dens.dim == op.dim
    assert dens.mass == pytest.approx(1.0, abs=1e-3)  # default sigma is resolved by 1000 points
    assert float(torch.trapezoid(dens.density, dens.grid)) == pytest.approx(1.0, abs=1e-9)
    assert bool((dens.density >= 0).all())
    assert dens.sigma == pytest.approx(
        math.sqrt(1e-5 * max(1.0, float(dens.nodes[dens.weights > 0].max() - dens.nodes[dens.weights > 0].min())))
    )
    assert torch.allclose(dens.weights.sum(1), torch.ones(8, dtype=F64), atol=1e-10)
    assert float(dens.nodes.max()) == pytest.approx(float(ev.max()), rel=1e-8)
    assert max(dens.steps) < op.dim  # rank-deficient H: the runs stopped on an invariant Krylov space
    assert dens.hvps == 8 * max(dens.steps)  # lockstep: one block product of 8 columns per step
    # Gauss quadrature with a full Krylov space: each run's moments are exactly v^T H^k v
    v = rademacher(op, 8, generator(0, "hessian.slq"))
    v = v / v.norm(dim=0, keepdim=True)
    mom = {k: (v * (torch.linalg.matrix_power(h, k) @ v)).sum(0) for k in (1, 2, 3, 4)}
    for k in (1, 2, 3, 4):
        per_run = (dens.weights * dens.nodes**k).sum(1)
        assert torch.allclose(per_run, mom[k], rtol=1e-8, atol=1e-12)


def test_slq_moments_estimate_normalised_power_traces():
    model = mlp()
    batches = [data(40, (6,))]
    op = HessianOperator(model, batches, dtype=F64)
    ev = torch.linalg.eigvalsh(dense_hessian(model, batches))
    dens = slq_density(op, runs=400, steps=100, seed=0)
    moments = slq_moments(dens, orders=(1, 2, 3, 4))
    for k, est in moments.items():
        exact = float((ev**k).mean())
        assert est.samples == 400
        assert abs(est.value - exact) <= 4 * est.stderr
        assert abs(est.value - exact) <= 0.1 * abs(exact)
    # the nodes/weights form gives the same numbers
    again = slq_moments((dens.nodes, dens.weights), orders=(2,))
    assert again[2].value == moments[2].value


def test_slq_masked_density_has_no_spike_at_zero():
    model = mlp()
    masks = half_masks(model)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n in masks:
                p.mul_(masks[n])  # pruned weights are exact zeros
    batches = [data(40, (6,), shift=1.0)]
    m = flat_mask(model, masks)
    h = dense_hessian(model, batches, masks=masks)
    full_ev = torch.linalg.eigvalsh(h)  # P eigenvalues: one exact 0 per pruned coordinate
    sub_ev = torch.linalg.eigvalsh(h[m][:, m])
    eps = 1e-6 * float(full_ev.abs().max())
    sub = HessianOperator(model, batches, masks=masks, dtype=F64)
    full = HessianOperator(model, batches, masks=masks, dtype=F64, mask_subspace=False)
    d_sub = slq_density(sub, runs=100, steps=100, seed=0)
    d_full = slq_density(full, runs=100, steps=100, seed=0)

    def zero_weight(d: Density) -> float:
        return float((d.weights * (d.nodes.abs() < eps)).sum(1).mean())

    pruned = float((~m).double().mean())
    exact_full = float((full_ev.abs() < eps).double().mean())
    exact_sub = float((sub_ev.abs() < eps).double().mean())
    # the full space carries one exact zero per pruned coordinate on top of the subspace's own zeros
    assert exact_full == pytest.approx(pruned + exact_sub * sub.active / full.dim, abs=1e-12)
    assert exact_full - exact_sub > 0.3
    assert zero_weight(d_full) == pytest.approx(exact_full, abs=0.03)
    assert zero_weight(d_sub) == pytest.approx(exact_sub, abs=0.03)
    assert zero_weight(d_full) - zero_weight(d_sub) == pytest.approx(exact_full - exact_sub, abs=0.05)
    assert pruned > 0.3 and d_sub.dim == sub.active < d_full.dim
