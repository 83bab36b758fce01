"""Lanczos on clustered top spectra (issue 13, point 12): no seed may return a 'top k' that skips a true top-k eigenvalue.

A Krylov space grown from one random start reaches an eigenvector nearly orthogonal to that start
only late, so a residual-based stop can return k converged pairs with the (k+1)-th value in place
of a true top-k one. `lanczos` checks every converged result with a deflated run from a fresh start
(see its docstring); these tests run many seeds against exact references: a synthetic operator
with a known spectrum and a small MLP whose dense Hessian is computed by torch.func.hessian.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, hessian

from lmc_core.foundations.config import ModelConfig
from lmc_core.foundations.seeding import generator
from lmc_core.hessian.eigen import Eigen, _beyond, _clear, _fresh_block, _run, lanczos
from lmc_core.hessian.operator import HessianOperator
from lmc_core.models import build_model

F64 = torch.float64
TOL = 1e-3
K = 5
SEEDS = range(100)

# torch.func.hessian (the dense reference only) goes through torch.jit.script on torch 2.13.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # Small operators on 2 shared cores: one intra-op thread avoids oversubscription.
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


# ----------------------------------------------------------------------------- operators with exact spectra


class MatrixOperator:
    """A fixed symmetric matrix with what `lanczos` reads of a HessianOperator (dim, active, dtype, device, subspace, hvps, matvec)."""

    def __init__(self, a: torch.Tensor):
        self.a, self.dim, self.active = a, a.shape[0], a.shape[0]
        self.dtype, self.device, self.hvps = a.dtype, a.device, 0
        self.subspace: torch.Tensor | None = None
        self.mask: torch.Tensor | None = None

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        self.hvps += 1 if v.dim() == 1 else v.shape[1]
        return self.a @ v


# Top eight within 15 % of each other (gaps 0.02-0.03), then a bulk from 0.6 down to -0.02 (a Hessian's shape).
CLUSTER = [1.0, 0.97, 0.95, 0.93, 0.91, 0.89, 0.87, 0.85]


def clustered_spectrum(n: int = 200) -> torch.Tensor:
    bulk = 0.6 * torch.linspace(1, 0, n - len(CLUSTER), dtype=F64) ** 3 - 0.02
    return torch.cat([torch.tensor(CLUSTER, dtype=F64), bulk])


def with_spectrum(values: torch.Tensor, seed: int = 6) -> torch.Tensor:
    """Return Q diag(values) Q^T with Q a random orthogonal matrix: random eigenvectors, exact eigenvalues."""
    g = generator(seed, "test.lanczos.clustered")
    q, _ = torch.linalg.qr(torch.randn(len(values), len(values), generator=g, dtype=F64))
    return (q * values) @ q.T


def wanted(values: torch.Tensor, k: int, which: str) -> torch.Tensor:
    """The k wanted eigenvalues of an exact spectrum, in `which` order."""
    if which == "LA":
        return values.sort(descending=True).values[:k]
    if which == "SA":
        return values.sort().values[:k]
    return values[values.abs().argsort(descending=True)][:k]


def misses(run: Callable[[int], Eigen], ref: torch.Tensor, seeds: range = SEEDS) -> dict[int, Eigen]:
    """Return {seed: result} for the seeds whose values are off the exact ones by more than TOL * |lambda_1|."""
    lam1 = float(ref.abs().max())
    out = {}
    for seed in seeds:
        eig = run(seed)
        if float((eig.values - ref).abs().max()) > TOL * lam1:
            out[seed] = eig
    return out


# ----------------------------------------------------------------------------- synthetic operator


def test_unchecked_stop_skips_a_clustered_eigenvalue():
    """Without the check (the algorithm before the fix) some seeds return the 6th value in place of a top-5 one.

    Each such result is 'converged' with small residuals: a residual-based stop cannot see the miss.
    """
    spectrum = clustered_spectrum()
    a, ref = with_spectrum(spectrum), wanted(spectrum, K, "LA")
    bad = misses(lambda s: lanczos(MatrixOperator(a), K, seed=s, verify=False), ref)
    assert len(bad) >= 2, sorted(bad)
    for eig in bad.values():
        assert eig.converged and not eig.verified and bool((eig.residuals <= TOL).all())
        assert abs(float(eig.values[-1] - spectrum[K])) <= TOL  # lambda_6 returned in place of a skipped one


def test_clustered_top5_every_seed_matches_the_exact_spectrum():
    """100 seeds, each converged, verified and within tol of the exact top five; the check costs < 2x the products."""
    spectrum = clustered_spectrum()
    a, ref = with_spectrum(spectrum), wanted(spectrum, K, "LA")
    results = {s: lanczos(MatrixOperator(a), K, seed=s) for s in SEEDS}
    bad = misses(lambda s: results[s], ref)
    assert not bad, {s: e.values.tolist() for s, e in bad.items()}
    assert all(e.converged and e.verified for e in results.values())
    unchecked = [lanczos(MatrixOperator(a), K, seed=s, verify=False).hvps for s in SEEDS]
    assert sum(e.hvps for e in results.values()) < 2 * sum(unchecked)


def test_a_detected_miss_is_repaired_by_a_block_restart():
    """Where the unchecked run skips a value, the check finds it and Lanczos restarts from the block [Y, hit]."""
    spectrum = clustered_spectrum()
    a, ref = with_spectrum(spectrum), wanted(spectrum, K, "LA")
    bad = misses(lambda s: lanczos(MatrixOperator(a), K, seed=s, verify=False), ref)
    assert bad
    for seed in bad:
        eig = lanczos(MatrixOperator(a), K, seed=seed)
        assert eig.converged and eig.verified
        assert float((eig.values - ref).abs().max()) <= TOL
        assert eig.hvps > eig.iterations  # a single-vector run that restarted with a block of K + 1
        v = eig.vectors
        assert torch.allclose(v.T @ v, torch.eye(K, dtype=F64), atol=1e-8)
        assert bool(((a @ v - v * eig.values).norm(dim=0) <= 1.01 * eig.residuals + 1e-12).all())


@pytest.mark.parametrize("which,block", [("SA", 1), ("LM", 1), ("LA", 2)])
def test_clustered_both_ends_every_seed(which, block):
    """Clusters at both ends (the negative one mirrored, scaled by 0.9): SA, LM and a block of 2 find every value too."""
    spectrum = clustered_spectrum()
    spectrum = torch.cat([spectrum, -0.9 * torch.tensor(CLUSTER, dtype=F64)])
    a, ref = with_spectrum(spectrum, seed=2), wanted(spectrum, K, which)
    bad = misses(lambda s: lanczos(MatrixOperator(a), K, which=which, seed=s, block=block), ref, range(40))
    assert not bad, {s: e.values.tolist() for s, e in bad.items()}


def test_eigenvalue_rule_checked_on_request():
    """The eigenvalue rule is unchecked by default (it stops early on purpose); verify=True checks it too."""
    spectrum = clustered_spectrum()
    a, ref = with_spectrum(spectrum), wanted(spectrum, K, "LA")
    bad = misses(lambda s: lanczos(MatrixOperator(a), K, seed=s, criterion="eigenvalue"), ref, range(40))
    assert bad  # it skips values more often than the residual rule
    for seed in bad:
        eig = lanczos(MatrixOperator(a), K, seed=seed, criterion="eigenvalue", verify=True)
        assert eig.verified and float((eig.values - ref).abs().max()) <= TOL


def test_check_within_the_step_budget():
    """max_iter bounds the first run; the checks get as many steps again; a check cut short leaves verified False."""
    spectrum = clustered_spectrum()
    a = with_spectrum(spectrum)
    free = lanczos(MatrixOperator(a), K, seed=0)
    first = lanczos(MatrixOperator(a), K, seed=0, verify=False)
    assert free.verified and free.iterations > first.iterations
    short = lanczos(MatrixOperator(a), K, seed=0, max_iter=first.iterations)
    assert short.converged and torch.equal(short.values, first.values)
    assert short.iterations <= 2 * first.iterations
    tight = lanczos(MatrixOperator(a), K, seed=0, max_iter=first.iterations, tol=1e-8)
    assert not tight.converged and not tight.verified and tight.iterations == first.iterations  # no check on an unconverged run
    small = with_spectrum(spectrum[:20])  # the first run takes 17 of 20 steps: 3 are left for the check
    cut, unchecked = lanczos(MatrixOperator(small), K, seed=0), lanczos(MatrixOperator(small), K, seed=0, verify=False)
    assert cut.converged and not cut.verified and cut.iterations == 20 and torch.equal(cut.values, unchecked.values)
    exact = lanczos(MatrixOperator(with_spectrum(spectrum[:12])), K, seed=0, tol=1e-10)
    assert exact.verified and exact.iterations == 12  # the whole space: exact values, nothing to check


class DiagonalOperator(MatrixOperator):
    """diag(d) without the matrix: eigenvectors are the coordinate axes (a random start sees them as any others)."""

    def __init__(self, d: torch.Tensor):
        super().__init__(torch.zeros(0, 0, dtype=d.dtype))
        self.d, self.dim, self.active = d, d.numel(), d.numel()

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        self.hvps += 1 if v.dim() == 1 else v.shape[1]
        return self.d.unsqueeze(1) * v if v.dim() == 2 else self.d * v


def test_check_sees_a_skipped_outlier_over_a_concentrated_bulk():
    """The check's own convergence scale: with 20,000 eigenvalues in a narrow bulk (spread 5e-4 |lambda_1|), a random
    start's residual is below tol * |lambda_1| after one step; the check must still find a skipped 5th value of 0.1."""
    g = generator(0, "test.lanczos.bulk")
    top = torch.tensor([1.0, 0.6, 0.45, 0.3, 0.1, 0.03], dtype=F64)
    d = torch.cat([top, 5e-4 * torch.randn(20_000, generator=g, dtype=F64)])
    op = DiagonalOperator(d)
    y = torch.zeros(d.numel(), K, dtype=F64)
    y[[0, 1, 2, 3, 5], range(K)] = 1  # a run that skipped u_5 (0.1) and returned u_6 (0.03) in its place
    kth, margin = 0.03, TOL * 1.0
    for seed in range(20):
        gc = generator(seed, "test.lanczos.check")
        check = _run(op, _fresh_block(op, 1, y, gc), y, 50, _clear(kth, margin, "LA", TOL), gc)
        assert bool(_beyond(check.theta, kth, margin, "LA").any()), seed


# ----------------------------------------------------------------------------- a small MLP with a dense Hessian


def clustered_mlp() -> tuple[nn.Module, list[tuple[torch.Tensor, torch.Tensor]]]:
    """An 8-24-10 MLP (466 parameters) at initialisation on 128 random examples: its top five within 17 % (10 classes)."""
    model = build_model(ModelConfig(arch="mlp", hidden=[24]), (8,), 10, seed=0)
    g = generator(0, "test.lanczos.mlp")
    x, y = torch.randn(128, 8, generator=g), torch.randint(0, 10, (128,), generator=g)
    return model, [(x, y)]


def dense_hessian(model: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """The mean cross-entropy's Hessian in float64 by torch.func.hessian (independent of HessianOperator)."""
    mm = copy.deepcopy(model).to(F64).eval()
    params = {n: p.detach() for n, p in mm.named_parameters()}
    flat = torch.cat([p.reshape(-1) for p in params.values()])

    def loss(v: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        out, o = {}, 0
        for n, p in params.items():
            out[n] = v[o : o + p.numel()].reshape(p.shape)
            o += p.numel()
        return F.cross_entropy(functional_call(mm, out, (x.to(F64),)), y)

    total = sum(len(y) for _, y in batches)
    h = torch.zeros(flat.numel(), flat.numel(), dtype=F64)
    for x, y in batches:
        h += len(y) / total * hessian(loss)(flat, x, y)
    return h


def test_mlp_top5_every_seed_matches_the_dense_hessian():
    """The real-network case: unchecked, several of 100 seeds skip a top-5 eigenvalue; checked, none does."""
    model, batches = clustered_mlp()
    ev = torch.linalg.eigvalsh(dense_hessian(model, batches))
    ref = ev.flip(0)[:K]
    assert float(ref[-1] / ref[0]) > 0.8  # clustered
    op = HessianOperator(model, batches, dtype=F64)
    before = misses(lambda s: lanczos(op, K, seed=s, verify=False), ref)
    assert len(before) >= 2, sorted(before)
    after = misses(lambda s: lanczos(op, K, seed=s), ref)
    assert not after, {s: e.values.tolist() for s, e in after.items()}


def test_mlp_masked_subspace_every_seed():
    """Half the weights pruned: the check lives in the unpruned subspace too (vectors exactly zero outside it).

    Unchecked, seeds 53, 66 and 67 skip a top-5 value of this subspace.
    """
    model, batches = clustered_mlp()
    g = generator(0, "test.lanczos.masks")
    masks = {n: torch.rand(p.shape, generator=g) < 0.5 for n, p in model.named_parameters() if n.endswith("weight")}
    keep = torch.cat([masks[n].reshape(-1) if n in masks else torch.ones(p.numel(), dtype=torch.bool) for n, p in model.named_parameters()])
    h = dense_hessian(model, batches)
    ref = torch.linalg.eigvalsh(h[keep][:, keep]).flip(0)[:K]
    op = HessianOperator(model, batches, masks=masks, dtype=F64)
    seeds = range(50, 80)
    results = {s: lanczos(op, K, seed=s) for s in seeds}
    bad = misses(lambda s: results[s], ref, seeds)
    assert not bad, {s: e.values.tolist() for s, e in bad.items()}
    for eig in results.values():
        assert eig.verified and torch.equal(eig.vectors[~keep], torch.zeros_like(eig.vectors[~keep]))
