"""Hessian of the mean cross-entropy loss as a matrix-free operator, and the estimators built on it.

The operator never forms H: a product H v is one extra backward pass through the gradient graph
(Pearlmutter's trick, paper.md 6.5). What makes it fast and honest (anchors_core.md 14-15):

* each batch's gradient graph is built once and reused for every product; a block of b vectors
  costs one batched backward per batch, not b;
* batches are weighted by their size, H = sum_b (n_b / N) H_b, so a short last batch is not
  over-weighted;
* masks restrict everything to the unpruned subspace: products are m * H(m * v), probes and start
  vectors are zero at pruned coordinates, so the spectrum carries no spurious spike at 0;
* the mode (eval / train, i.e. BatchNorm running or batch statistics) is explicit and set on a
  private deep copy: the caller's model, its buffers, flags and mode are never touched; in eval mode
  the copy's running-statistics BatchNorms are written as the per-channel affine maps they are
  (`_EvalBatchNorm`: same parameters and values, a far cheaper double backward);
* a single vector's product differentiates g . v (no `grad_outputs`), which also spares a fresh
  process the ~0.4 s import that autograd's `grad_outputs` shape check triggers on its first call;
* estimators report their error: Ritz residuals for eigenpairs, standard errors for traces and
  diagonals, per-run nodes and weights for the spectral density; every probe comes from a seeded
  generator (`seeding.generator`), never the global RNG.

Vectors are flat, the parameters concatenated in `named_parameters()` order.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from lmc_core.foundations.heap import roomy_heap
from lmc_core.foundations.seeding import generator

Masks = dict[str, torch.Tensor]
Batch = tuple[torch.Tensor, torch.Tensor]

MODES = ("eval", "train")
WHICH = ("LA", "LM", "SA")
TRACE_METHODS = ("hutch++", "hutchinson")


# ----------------------------------------------------------------------------- operator


class _EvalBatchNorm(nn.Module):
    """An eval-mode BatchNorm written as x * s + t, s = weight / sqrt(running_var + eps), t = bias - running_mean * s.

    The same parameters and buffers under the same names (so `named_parameters()` order and
    `functional_call` keys are unchanged) and the same values up to rounding. Why: the double backward
    of `native_batch_norm` always takes the training-mode formula (batch statistics, a dozen
    elementwise passes over the activations), a third of a ConvNetBN-D3W16 Hessian-vector product
    on the team's CPU; for a per-channel affine map it is two products.
    """

    def __init__(self, bn: nn.modules.batchnorm._BatchNorm):
        super().__init__()
        self.weight = bn.weight
        self.bias = bn.bias
        self.register_buffer("running_mean", bn.running_mean)
        self.register_buffer("running_var", bn.running_var)
        self.register_buffer("num_batches_tracked", bn.num_batches_tracked)
        self.eps = bn.eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1) + (1,) * (x.dim() - 2)
        s = torch.rsqrt(self.running_var + self.eps)
        if self.weight is not None:
            s = self.weight * s
        t = -self.running_mean * s
        if self.bias is not None:
            t = self.bias + t
        return x * s.reshape(shape) + t.reshape(shape)


def _affine_batchnorm(model: nn.Module) -> None:
    """Replace, in place, every BatchNorm that normalises with running statistics in eval mode by `_EvalBatchNorm`."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if (isinstance(child, nn.modules.batchnorm._BatchNorm) and not child.training
                    and child.track_running_stats and child.running_mean is not None and child.running_var is not None):
                setattr(parent, name, _EvalBatchNorm(child))


class HessianOperator:
    """The Hessian of the mean cross-entropy over the union of `batches`, as a linear operator on flat vectors.

    `parameters` picks a subset of the named parameters (default: all, in `named_parameters()`
    order); `masks` (parameter name -> bool tensor, True = kept) restricts products to the
    unpruned subspace. With `mask_subspace=True` (default) the estimators also live in that
    subspace (`active` coordinates); with False they work in all `dim` coordinates, so the pruned
    directions show up as exact zero eigenvalues (what a `torch.nn.utils.prune` reparametrisation
    gives).
    """

    def __init__(
        self,
        model: nn.Module,
        batches: Sequence[Batch],
        *,
        masks: Masks | None = None,
        dtype: torch.dtype = torch.float32,
        mode: str = "eval",
        parameters: Sequence[str] | None = None,
        mask_subspace: bool = True,
    ):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if not dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating dtype, got {dtype}")
        batches = list(batches)
        if not batches:
            raise ValueError("the Hessian needs at least one (x, y) batch")

        # A private copy: the mode, the dtype cast and BatchNorm's running-stat updates in train
        # mode all happen here, never on the caller's model.
        work = copy.deepcopy(model)
        work.to(dtype)
        work.train(mode == "train")
        if mode == "eval":
            _affine_batchnorm(work)
        all_params = dict(work.named_parameters())
        names = list(all_params) if parameters is None else list(parameters)
        unknown = [n for n in names if n not in all_params]
        if unknown:
            raise KeyError(f"unknown parameter names {unknown[:5]}; expected names from model.named_parameters()")
        if len(set(names)) != len(names):
            raise ValueError("parameter names must be distinct")
        if not names:
            raise ValueError("no parameters selected")
        names = [n for n in all_params if n in set(names)]  # named_parameters order, whatever the caller's order

        self.names: list[str] = names
        self.shapes: list[torch.Size] = [all_params[n].shape for n in names]
        self.sizes: list[int] = [all_params[n].numel() for n in names]
        self.offsets: list[int] = [0]
        for s in self.sizes:
            self.offsets.append(self.offsets[-1] + s)
        self.dim: int = self.offsets[-1]
        self.dtype = dtype
        self.mode = mode
        self.device = next(iter(all_params.values())).device
        self.hvps = 0

        # Flat mask over the selected coordinates (None = dense).
        self.mask: torch.Tensor | None = None
        if masks:
            flat = torch.ones(self.dim, dtype=torch.bool, device=self.device)
            for key, m in masks.items():
                if key not in all_params:
                    raise KeyError(f"mask key {key!r} is not a parameter of the model")
                if tuple(m.shape) != tuple(all_params[key].shape):
                    raise ValueError(f"mask {key!r} has shape {tuple(m.shape)} but the parameter has {tuple(all_params[key].shape)}")
                if key in names:
                    i = names.index(key)
                    flat[self.offsets[i] : self.offsets[i + 1]] = m.to(self.device).bool().reshape(-1)
            self.mask = None if bool(flat.all()) else flat
        self.subspace: torch.Tensor | None = self.mask if mask_subspace else None
        self.active: int = self.dim if self.subspace is None else int(self.subspace.sum())

        # Detached leaf copies for the selected parameters; the rest (and buffers) stay constants.
        self._leaves = [all_params[n].detach().clone().requires_grad_(True) for n in names]
        frozen = {n: p.detach() for n, p in all_params.items() if n not in set(names)}
        for p in work.parameters():
            p.requires_grad_(False)
        buffers = dict(work.named_buffers())

        total = 0
        self._grads: list[torch.Tensor] = []
        self._weights: list[float] = []
        sizes = []
        for x, y in batches:
            x = x.to(self.device)
            if x.is_floating_point():
                x = x.to(dtype)
            y = y.to(self.device)
            with torch.enable_grad():
                out = functional_call(work, {**frozen, **buffers, **dict(zip(names, self._leaves))}, (x,))
                loss = F.cross_entropy(out, y)
                grads = torch.autograd.grad(loss, self._leaves, create_graph=True, allow_unused=True)
                flat_g = torch.cat([
                    (g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(grads, self._leaves)
                ])
            self._grads.append(flat_g)
            sizes.append(int(y.shape[0]))
            total += int(y.shape[0])
        self.num_examples = total
        self._weights = [n / total for n in sizes]
        self._batched_ok = True
        # How a block of b vectors is multiplied: one vmap'd backward (`is_grads_batched`) or b plain
        # backwards. Measured on the team's CPU (2 threads): vmap 2x slower than the loop for
        # ConvNetBN-D3W16 (76 vs 35 ms per product), equal for the MLPs. None: not measured yet; the
        # first three block products run vmap (warm-up), vmap (timed), loop (timed), no extra products,
        # and the faster is kept (`block_ms_per_product` holds the timings).
        self.block_strategy: str | None = None
        self.block_ms_per_product: dict[str, float] = {}
        self._block_calls = 0

    # -- products ------------------------------------------------------------------------

    def _project(self, v: torch.Tensor) -> torch.Tensor:
        return v if self.mask is None else torch.where(self.mask.view(-1, *([1] * (v.dim() - 1))), v, torch.zeros((), dtype=v.dtype))

    def _backward(self, g: torch.Tensor, v: torch.Tensor, batched: bool) -> torch.Tensor:
        if batched:
            parts = torch.autograd.grad(g, self._leaves, grad_outputs=v, retain_graph=True, allow_unused=True, is_grads_batched=True)
        else:
            # d(g . v)/d(theta) = H v, the same backward as grad_outputs=v; a scalar output also skips the
            # grad_outputs shape check, whose first call imports sympy (~0.4 s in a fresh process).
            parts = torch.autograd.grad(torch.dot(g, v), self._leaves, retain_graph=True, allow_unused=True)
        lead = (v.shape[0],) if batched else ()
        return torch.cat([
            (h if h is not None else torch.zeros(*lead, *p.shape, dtype=self.dtype, device=self.device)).reshape(*lead, -1)
            for h, p in zip(parts, self._leaves)
        ], dim=-1)

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        """Return H v for a vector (P,) or H V for a block (P, b), masked as m * H(m * v); counts b products."""
        if v.dim() not in (1, 2) or v.shape[0] != self.dim:
            raise ValueError(f"expected a vector ({self.dim},) or a block ({self.dim}, b), got {tuple(v.shape)}")
        v = self._project(v.to(device=self.device, dtype=self.dtype))
        cols = 1 if v.dim() == 1 else v.shape[1]
        self.hvps += cols
        out = torch.zeros_like(v)
        if cols == 0:
            return out
        with roomy_heap():  # the double backward frees and re-allocates large buffers: keep them off fresh pages
            return self._matvec(v, cols, out)

    def _block(self, g: torch.Tensor, v: torch.Tensor, cols: int) -> torch.Tensor:
        """Return H_b V for a block (P, cols >= 2): vmap'd or looped backward, whichever measured faster here."""
        strategy = self.block_strategy
        if strategy is None:  # measuring: vmap twice (if it works at all; the first call warms it up), then the loop
            strategy = "vmap" if self._block_calls < 2 else "loop"
            self._block_calls += 1
        hv = None
        t0 = time.perf_counter()
        if strategy == "vmap":
            try:
                hv = self._backward(g, v.T.contiguous(), batched=True).T
            except (RuntimeError, NotImplementedError):
                self._batched_ok = False  # an op without a batching rule: the loop from now on
                self.block_strategy = "loop"
        if hv is None:
            strategy = "loop"
            hv = torch.stack([self._backward(g, v[:, j], batched=False) for j in range(cols)], dim=1)
        if self.block_strategy is None and self._block_calls >= 2:
            self.block_ms_per_product[strategy] = 1e3 * (time.perf_counter() - t0) / cols
            if len(self.block_ms_per_product) == 2:
                self.block_strategy = min(self.block_ms_per_product, key=self.block_ms_per_product.get)
        return hv

    def _matvec(self, v: torch.Tensor, cols: int, out: torch.Tensor) -> torch.Tensor:
        for g, w in zip(self._grads, self._weights):
            if not g.requires_grad:
                continue  # the gradient does not depend on the selected parameters: H_b = 0
            if v.dim() == 1:
                hv = self._backward(g, v, batched=False)
            elif cols == 1:
                hv = self._backward(g, v[:, 0], batched=False).unsqueeze(1)
            else:
                hv = self._block(g, v, cols)
            out.add_(hv, alpha=w)
        return self._project(out)

    __matmul__ = matvec

    def unflatten(self, v: torch.Tensor) -> dict[str, torch.Tensor]:
        """Return a flat vector (P,) as {parameter name: tensor of the parameter's shape}."""
        return {n: v[a:b].reshape(s) for n, s, a, b in zip(self.names, self.shapes, self.offsets[:-1], self.offsets[1:])}

    def to_dense(self, batch: int = 64) -> torch.Tensor:
        """Return the (P, P) matrix (masked rows and columns zero): P products, for tiny models and tests."""
        cols = []
        for start in range(0, self.dim, batch):
            stop = min(self.dim, start + batch)
            e = torch.zeros(self.dim, stop - start, dtype=self.dtype, device=self.device)
            e[torch.arange(start, stop), torch.arange(stop - start)] = 1
            cols.append(self.matvec(e))
        return torch.cat(cols, dim=1)


# ----------------------------------------------------------------------------- helpers


def _active_index(op: HessianOperator) -> torch.Tensor | None:
    return None if op.subspace is None else op.subspace.nonzero().squeeze(1)


def _restrict(op: HessianOperator, v: torch.Tensor) -> torch.Tensor:
    """Zero the coordinates outside the operator's subspace."""
    if op.subspace is None:
        return v
    return torch.where(op.subspace.view(-1, *([1] * (v.dim() - 1))), v, torch.zeros((), dtype=v.dtype))


def _rademacher(op: HessianOperator, n: int, g: torch.Generator) -> torch.Tensor:
    """Return (P, n) Rademacher probes in the operator's dtype, zero outside its subspace."""
    z = torch.randint(0, 2, (op.dim, n), generator=g).to(op.dtype).mul_(2).sub_(1)
    return _restrict(op, z.to(op.device))


def _gaussian(op: HessianOperator, n: int, g: torch.Generator) -> torch.Tensor:
    z = torch.randn(op.dim, n, generator=g, dtype=torch.float64).to(device=op.device, dtype=op.dtype)
    return _restrict(op, z)


def _breakdown(dtype: torch.dtype) -> float:
    """Relative size below which a new Lanczos direction is round-off (an invariant Krylov space)."""
    return 1e3 * torch.finfo(dtype).eps


def _mean_stderr(samples: torch.Tensor) -> tuple[float, float]:
    n = samples.numel()
    mean = float(samples.mean())
    stderr = float(samples.std(unbiased=True) / math.sqrt(n)) if n > 1 else math.inf
    return mean, stderr


# ----------------------------------------------------------------------------- eigenpairs


@dataclass
class Eigen:
    """Ritz pairs from Lanczos: values sorted by `which`, vectors (P, k), Ritz residuals ||H v - lambda v||.

    `bounds` are the eigenvalue error bounds min(r_i, r_i^2 / gap_i) (gap_i estimated from the Ritz
    values, see `lanczos`); `criterion` is the stopping rule that was used.
    """

    values: torch.Tensor
    vectors: torch.Tensor
    residuals: torch.Tensor
    hvps: int
    iterations: int
    converged: bool
    which: str = "LA"
    bounds: torch.Tensor | None = None
    criterion: str = "residual"


def _select(theta: torch.Tensor, k: int, which: str) -> torch.Tensor:
    """Return the indices of the k wanted Ritz values, in `which` order."""
    if which == "LA":
        order = torch.argsort(theta, descending=True)
    elif which == "SA":
        order = torch.argsort(theta)
    else:
        order = torch.argsort(theta.abs(), descending=True)
    return order[:k]


def _eigenvalue_bounds(theta: torch.Tensor, idx: torch.Tensor, res_all: torch.Tensor) -> torch.Tensor:
    """Return min(r_i, r_i^2 / gap_i) for the Ritz values theta[idx] (r = res_all, the residuals of all Ritz pairs).

    gap_i = min over the *other* Ritz values j of max(0, |theta_i - theta_j| - r_j): each Ritz pair
    certifies an eigenvalue within r_j of theta_j, so an unconverged neighbour (large r_j) shrinks
    the gap instead of inflating it (Parlett, The Symmetric Eigenvalue Problem, 11.7). The other
    Ritz value is excluded by index, not by value, so a repeated Ritz value has gap 0 and the bound
    falls back to r_i.
    """
    res = res_all[idx]
    if theta.numel() < 2:
        return res.clone()
    d = ((theta[idx].unsqueeze(1) - theta.unsqueeze(0)).abs() - res_all.unsqueeze(0)).clamp_min(0)
    d[torch.arange(idx.numel()), idx] = math.inf
    gap = d.min(dim=1).values
    quad = torch.where(gap > 0, res * res / gap.clamp_min(1e-300), torch.full_like(res, math.inf))
    return torch.minimum(res, quad)


def _cgs2(w: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """Orthogonalise w against the orthonormal columns of `basis`: classical Gram-Schmidt, twice."""
    if basis.shape[1] == 0:
        return w
    for _ in range(2):
        w = w - basis @ (basis.T @ w)
    return w


def _next_block(op: HessianOperator, w: torch.Tensor, basis: torch.Tensor, scale: float, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (Q, B) with W = Q B up to round-off directions (norm <= _breakdown * scale), Q orthonormal and orthogonal to `basis`.

    SVD, not QR, so a rank-deficient W (an invariant subspace, repeated eigenvalues) is handled by
    dropping its tiny directions (zero rows of B) and filling Q with fresh random vectors
    orthogonal to everything so far: the Lanczos restart, for single vectors and blocks alike. A
    single column needs no SVD: its norm is its singular value (Q = w / ||w||, B = [||w||]).
    """
    if w.shape[1] == 1:
        s = torch.linalg.vector_norm(w).reshape(1)
        u = w / s if float(s) > 0 else w.clone()
        vh = torch.ones(1, 1, dtype=w.dtype, device=w.device)
    else:
        u, s, vh = torch.linalg.svd(w, full_matrices=False)
    u = _restrict(op, u)  # the SVD leaves round-off at pruned coordinates; they must stay exact zeros
    b = s.unsqueeze(1) * vh
    small = s <= _breakdown(op.dtype) * max(scale, 1e-30)
    if bool(small.any()):
        b[small] = 0
        for i in small.nonzero().squeeze(1).tolist():
            keep = torch.cat([basis, u[:, :i], u[:, i + 1 :]], dim=1)
            fresh = _cgs2(_gaussian(op, 1, g)[:, 0], keep)
            u[:, i] = fresh / fresh.norm()
    return u, b


CRITERIA = ("residual", "eigenvalue")


def lanczos(
    op: HessianOperator,
    k: int,
    which: str = "LA",
    tol: float = 1e-3,
    max_iter: int | None = None,
    seed: int = 0,
    block: int = 1,
    criterion: str = "residual",
) -> Eigen:
    """Return k Ritz pairs of `op` by (block) Lanczos with full reorthogonalisation (CGS2 against the stored basis).

    Each step multiplies a block of `block` vectors in one product. Stopping rules (`criterion`),
    with |lambda_1| estimated by the largest Ritz value in magnitude and r_i the Ritz residual
    (|beta_m * s_m,i| for one vector, ||B_m S_m,i|| for a block, equal to ||H v_i - theta_i v_i||
    to working precision under full reorthogonalisation):

    * "residual" (default): every wanted pair has r_i <= tol * |lambda_1|. Each value is then within
      r_i of some eigenvalue of H with no further assumption, and the vectors' residuals are bounded
      too (what eigenvector users, e.g. direction plots, need).
    * "eigenvalue": every wanted Ritz value has the error bound min(r_i, r_i^2 / gap_i) <= tol *
      |lambda_1|, the Kato-Temple / Saad bound for an isolated eigenvalue. The true gap (distance to
      the nearest other eigenvalue) is unknown; it is estimated from the Ritz values as
      min_j max(0, |theta_i - theta_j| - r_j) (see `_eigenvalue_bounds`), which is too large when an
      eigenvalue near theta_i has no Ritz value yet: then the bound is optimistic. Clustered or
      repeated values have small gaps and fall back to r_i. The values' error decays like r^2, so it
      stops earlier (on the benchmark's Hessians 1 product fewer of 9-16; on tiny test models 0-5
      steps of 10-28), but the vectors are only accurate to about r_i / gap_i in angle.

    Why "residual" is the default for studies: its bound needs no gap estimate, the eigenvectors it
    returns are certified, and stopping later leaves more steps for an eigenvalue whose Ritz value
    has not appeared yet. An early stop can miss such an eigenvalue under either rule (the returned
    values are then accurate but one is skipped), and the eigenvalue rule stops earlier: on the tiny
    test models (k = 4, seed 2) it returned values off by more than tol in 7 of 84 (which, tol, model)
    cases against 2 for the residual rule, and once a value not within tol of any eigenvalue (its
    gap overestimated). Use it for top eigenvalues of well-separated spectra when products are
    expensive, and check `bounds`.

    `Eigen.bounds` holds min(r_i, r_i^2 / gap_i) whichever rule stopped the iteration. Otherwise the
    iteration stops after `max_iter` steps (default: the subspace dimension / block, capped at
    max(20 k, 100) / block). An invariant Krylov space (beta ~ 0) is continued with fresh vectors
    orthogonal to the basis, so a run to exhaustion finds repeated eigenvalues with their
    multiplicity; a single-vector run that stops on a rule holds one copy of each repeated value
    (its Krylov space touches the eigenspace in one direction): use `block` >= the multiplicity.
    `iterations` counts steps, `hvps` products (steps x block).
    """
    if which not in WHICH:
        raise ValueError(f"which must be one of {WHICH}, got {which!r}")
    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {CRITERIA}, got {criterion!r}")
    n = op.active
    if not 1 <= k <= n:
        raise ValueError(f"k must be between 1 and the subspace dimension {n}, got {k}")
    if not 1 <= block <= n:
        raise ValueError(f"block must be between 1 and the subspace dimension {n}, got {block}")
    steps_cap = n // block  # whole blocks that fit in the subspace
    m_max = math.ceil(max(20 * k, 100) / block) if max_iter is None else int(max_iter)
    m_max = min(steps_cap, max(m_max, math.ceil(k / block)))
    if m_max * block < k:
        raise ValueError(f"k={k} Ritz pairs need more than {steps_cap} steps of block {block} in dimension {n}")
    g = generator(seed, "hessian.lanczos")
    start_hvps = op.hvps
    width = m_max * block
    # Stored as rows (width, P): writing a new block is a contiguous copy; basis_t[:hi].T is the (P, hi)
    # basis as a transposed view (BLAS takes it without a copy). Only the filled rows are ever read.
    basis_t = torch.empty(width, op.dim, dtype=op.dtype, device=op.device)
    t = torch.zeros(width, width, dtype=torch.float64)
    q = _orthonormal_in_subspace(op, _gaussian(op, block, g))
    converged = False
    theta = s = c64 = None
    steps = 0
    for j in range(m_max):
        lo, hi = j * block, (j + 1) * block
        basis_t[lo:hi] = q.T
        w = op.matvec(q)
        a = (q.T @ w).double().cpu()
        t[lo:hi, lo:hi] = 0.5 * (a + a.T)
        w = _cgs2(w, basis_t[:hi].T)  # removes A_j q_j and B_{j-1} q_{j-1} too, to working precision
        theta, s = torch.linalg.eigh(t[:hi, :hi])
        scale = float(theta.abs().max())
        if hi < n:
            q, coupling = _next_block(op, w, basis_t[:hi].T, scale, g)
            c64 = coupling.double().cpu()
        else:  # the whole subspace is spanned: no next block
            c64 = torch.zeros(block, block, dtype=torch.float64)
        steps = j + 1
        if hi >= k:
            idx = _select(theta, k, which)
            res_all = (c64 @ s[lo:hi]).norm(dim=0)
            err = res_all[idx] if criterion == "residual" else _eigenvalue_bounds(theta, idx, res_all)
            if bool((err <= tol * scale).all()):
                converged = True
                break
        if j + 1 < m_max:
            t[hi : hi + block, lo:hi] = c64
            t[lo:hi, hi : hi + block] = c64.T
    hi = steps * block
    idx = _select(theta, k, which)
    res_all = (c64 @ s[hi - block : hi]).norm(dim=0)
    if steps * block == n:
        converged = True  # the whole subspace: Ritz pairs are eigenpairs
        res_all = torch.zeros_like(res_all)
    res = res_all[idx]
    bounds = _eigenvalue_bounds(theta, idx, res_all)
    vecs = basis_t[:hi].T @ s[:, idx].to(device=op.device, dtype=op.dtype)
    return Eigen(
        values=theta[idx].to(device=op.device, dtype=op.dtype),
        vectors=vecs,
        residuals=res.to(device=op.device, dtype=op.dtype),
        hvps=op.hvps - start_hvps,
        iterations=steps,
        converged=converged,
        which=which,
        bounds=bounds.to(device=op.device, dtype=op.dtype),
        criterion=criterion,
    )


def _orthonormal_in_subspace(op: HessianOperator, v: torch.Tensor) -> torch.Tensor:
    """Return an orthonormal basis of the columns of v restricted to the subspace (QR in the active coordinates)."""
    idx = _active_index(op)
    if idx is None:
        return torch.linalg.qr(v)[0]
    out = torch.zeros_like(v)
    out[idx] = torch.linalg.qr(v[idx])[0]
    return out


# ----------------------------------------------------------------------------- trace


@dataclass
class Estimate:
    """A stochastic estimate with its standard error, the number of probes and the products it cost."""

    value: float
    stderr: float
    samples: int
    hvps: int


def _quadratic_forms(op: HessianOperator, n: int, g: torch.Generator, batch: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Return z_i^T H z_i for n Rademacher probes and, per parameter tensor, z_i,b^T (H z_i)_b."""
    total, blocks = [], [[] for _ in op.names]
    done = 0
    while done < n:
        b = min(batch, n - done)
        z = _rademacher(op, b, g)
        hz = op.matvec(z)
        prod = z * hz
        total.append(prod.sum(0))
        for i, (a, c) in enumerate(zip(op.offsets[:-1], op.offsets[1:])):
            blocks[i].append(prod[a:c].sum(0))
        done += b
    return torch.cat(total), [torch.cat(x) for x in blocks]


def hutchinson_trace(op: HessianOperator, samples: int, seed: int = 0, batch: int = 16) -> Estimate:
    """Return Hutchinson's estimate (1/m) sum z^T H z over `samples` Rademacher probes (zero at pruned coordinates)."""
    if samples < 1:
        raise ValueError(f"samples must be positive, got {samples}")
    start = op.hvps
    q, _ = _quadratic_forms(op, samples, generator(seed, "hessian.hutchinson"), batch)
    mean, se = _mean_stderr(q.double())
    return Estimate(mean, se, samples, op.hvps - start)


def _sketch(op: HessianOperator, s: int, g: torch.Generator) -> tuple[torch.Tensor, float]:
    """Return Q (P, s') orthonormal, spanning H S for s Rademacher probes, inside the subspace, and tr(Q^T H Q)."""
    y = op.matvec(_rademacher(op, s, g))
    idx = _active_index(op)
    ya = y if idx is None else y[idx]
    qa, _ = torch.linalg.qr(ya)  # QR in the active coordinates keeps Q inside the subspace
    if idx is None:
        q = qa
    else:
        q = torch.zeros(op.dim, qa.shape[1], dtype=op.dtype, device=op.device)
        q[idx] = qa
    return q, float((q * op.matvec(q)).sum())


def _deflated_forms(op: HessianOperator, q: torch.Tensor, n: int, g: torch.Generator, batch: int) -> torch.Tensor:
    """Return z_i^T (I - QQ^T) H (I - QQ^T) z_i for n Rademacher probes."""
    out = []
    done = 0
    while done < n:
        b = min(batch, n - done)
        z = _rademacher(op, b, g)
        z = z - q @ (q.T @ z)
        out.append((z * op.matvec(z)).sum(0))
        done += b
    return torch.cat(out)


def hutchpp_trace(op: HessianOperator, hvps: int, seed: int = 0, batch: int = 16) -> Estimate:
    """Return the Hutch++ estimate (Meyer et al. 2021) with `hvps` products in all.

    m/3 probes sketch Q = qr(H S); tr(Q^T H Q) costs m/3 more; the remaining products are Hutchinson
    probes on (I - QQ^T) H (I - QQ^T). The standard error is the Hutchinson part's (the sketch
    term is exact given Q).
    """
    if hvps < 4:
        raise ValueError(f"Hutch++ needs at least 4 products (sketch, its trace and 2 probes), got {hvps}")
    g = generator(seed, "hessian.hutchpp")
    start = op.hvps
    s = min(hvps // 3, op.active)
    q, head = _sketch(op, s, g)
    n = hvps - 2 * s
    tail = _deflated_forms(op, q, n, g, batch).double()
    mean, se = _mean_stderr(tail)
    return Estimate(head + mean, se, n, op.hvps - start)


def trace(
    op: HessianOperator,
    rel_tol: float = 0.01,
    max_hvps: int = 1000,
    seed: int = 0,
    method: str = "hutch++",
    batch: int = 16,
    sketch: int | None = None,
) -> Estimate:
    """Return an adaptive trace estimate: add probes in batches until stderr / |value| <= rel_tol or `max_hvps` are spent.

    "hutchinson": plain Rademacher probes. "hutch++": a sketch Q of `sketch` probes (default
    max_hvps // 6, at most the subspace dimension) is taken first, tr(Q^T H Q) computed exactly,
    then deflated Hutchinson probes are added adaptively (their standard error is the estimate's).
    """
    if method not in TRACE_METHODS:
        raise ValueError(f"method must be one of {TRACE_METHODS}, got {method!r}")
    if rel_tol <= 0:
        raise ValueError(f"rel_tol must be positive, got {rel_tol}")
    start = op.hvps
    head = 0.0
    q = None
    if method == "hutch++":
        g = generator(seed, "hessian.trace.hutch++")
        s = min(op.active, max(1, max_hvps // 6) if sketch is None else int(sketch))
        if 2 * s + 2 > max_hvps:
            raise ValueError(f"max_hvps={max_hvps} is too small for a sketch of {s} probes plus 2 probes")
        q, head = _sketch(op, s, g)
    else:
        g = generator(seed, "hessian.trace.hutchinson")
        if max_hvps < 2:
            raise ValueError(f"max_hvps must be at least 2, got {max_hvps}")
    forms: list[torch.Tensor] = []
    while True:
        left = max_hvps - (op.hvps - start)
        if left <= 0:
            break
        b = min(batch, left)
        if q is None:
            z = _rademacher(op, b, g)
            forms.append((z * op.matvec(z)).sum(0).double())
        else:
            forms.append(_deflated_forms(op, q, b, g, b).double())
        x = torch.cat(forms)
        if x.numel() >= 2:
            mean, se = _mean_stderr(x)
            value = head + mean
            if se <= rel_tol * abs(value):
                break
    x = torch.cat(forms)
    mean, se = _mean_stderr(x)
    return Estimate(head + mean, se, x.numel(), op.hvps - start)


def layer_traces(op: HessianOperator, samples: int = 100, seed: int = 0, batch: int = 16) -> dict[str, Estimate]:
    """Return the trace of each parameter tensor's diagonal block H_bb, from one Rademacher probe set.

    E[z_b^T (H z)_b] = tr(H_bb) because the cross terms have mean zero; the per-block sums add up
    exactly to the probes' Hutchinson estimate of tr(H): the probes are those of
    `hutchinson_trace(op, samples, seed, batch)`. `hvps` is the shared cost of the probe set.
    """
    start = op.hvps
    _, blocks = _quadratic_forms(op, samples, generator(seed, "hessian.hutchinson"), batch)
    cost = op.hvps - start
    out = {}
    for name, x in zip(op.names, blocks):
        mean, se = _mean_stderr(x.double())
        out[name] = Estimate(mean, se, samples, cost)
    return out


# ----------------------------------------------------------------------------- diagonal


def hutchinson_diagonal(op: HessianOperator, samples: int, seed: int = 0, batch: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (diag, stderr): the mean of z * (H z) over Rademacher probes and its per-entry standard error.

    The variance of entry j is sum_{k != j} H_jk^2 per probe (Bekas et al.); pruned entries are 0.
    """
    if samples < 2:
        raise ValueError(f"samples must be at least 2 (for a standard error), got {samples}")
    g = generator(seed, "hessian.diagonal")
    s1 = torch.zeros(op.dim, dtype=torch.float64, device=op.device)
    s2 = torch.zeros_like(s1)
    done = 0
    while done < samples:
        b = min(batch, samples - done)
        z = _rademacher(op, b, g)
        d = (z * op.matvec(z)).double()
        s1 += d.sum(1)
        s2 += (d * d).sum(1)
        done += b
    mean = s1 / samples
    var = ((s2 - samples * mean * mean) / (samples - 1)).clamp_min(0)
    return mean.to(op.dtype), (var / samples).sqrt().to(op.dtype)


def exact_diagonal(op: HessianOperator, batch: int = 64) -> torch.Tensor:
    """Return diag(H) exactly from unit-vector products, `batch` columns per product (pruned entries 0, not computed)."""
    idx = _active_index(op)
    if idx is None:
        idx = torch.arange(op.dim, device=op.device)
    diag = torch.zeros(op.dim, dtype=op.dtype, device=op.device)
    for start in range(0, idx.numel(), batch):
        cols = idx[start : start + batch]
        e = torch.zeros(op.dim, cols.numel(), dtype=op.dtype, device=op.device)
        j = torch.arange(cols.numel(), device=op.device)
        e[cols, j] = 1
        diag[cols] = op.matvec(e)[cols, j]
    return diag


# ----------------------------------------------------------------------------- spectral density


@dataclass
class Density:
    """A smoothed spectral density from stochastic Lanczos quadrature.

    `density` on `grid` integrates to 1 (`mass` is the grid integral before that normalisation:
    close to 1 when the grid resolves sigma). `nodes` and `weights` are (runs, steps) Ritz values
    and weights tau = (e1^T u)^2 of each run (rows padded with weight 0 when a run stopped early).
    The density is over the `dim` coordinates of the operator's subspace (`active`).
    """

    grid: torch.Tensor
    density: torch.Tensor
    nodes: torch.Tensor
    weights: torch.Tensor
    sigma: float
    mass: float
    dim: int
    hvps: int = 0
    steps: list[int] = field(default_factory=list)


def _lockstep_lanczos(op: HessianOperator, runs: int, steps: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Run `runs` Lanczos processes from normalised Rademacher vectors, one block product per step.

    Returns per-run tridiagonal (alphas, betas) padded to `steps`, and each run's length (a run stops
    when its Krylov space is invariant).
    """
    v = _rademacher(op, runs, g)
    v = v / v.norm(dim=0, keepdim=True)
    # (runs, steps, P): each run's first j + 1 basis vectors are one contiguous (j + 1, P) slab, so CGS2
    # is two batched GEMVs (bmm) with no copy of a strided slice.
    basis = torch.empty(runs, steps, op.dim, dtype=op.dtype, device=op.device)
    alphas = torch.zeros(runs, steps, dtype=torch.float64)
    betas = torch.zeros(runs, steps, dtype=torch.float64)
    alive = torch.ones(runs, dtype=torch.bool)
    length = [steps] * runs
    for j in range(steps):
        basis[:, j, :] = v.T
        w = op.matvec(v)  # (P, runs)
        alphas[:, j] = (v * w).sum(0).double().cpu()
        wt = w.T.unsqueeze(2)  # (runs, P, 1)
        b = basis[:, : j + 1, :]  # (runs, j + 1, P)
        for _ in range(2):  # CGS2 per run against its own basis, batched
            wt = wt - torch.bmm(b.transpose(1, 2), torch.bmm(b, wt))
        wt = wt.squeeze(2)  # (runs, P)
        beta = wt.norm(dim=1).double().cpu()
        if j + 1 == steps:
            break
        scale = alphas[:, : j + 1].abs().amax(1).clamp_min(1e-30)
        for r in range(runs):
            if alive[r] and float(beta[r]) <= _breakdown(op.dtype) * float(scale[r]):
                alive[r] = False
                length[r] = j + 1
        betas[:, j] = torch.where(alive, beta, torch.zeros((), dtype=torch.float64))
        safe = torch.where(alive, beta, torch.ones((), dtype=torch.float64)).to(device=wt.device, dtype=wt.dtype)
        v = torch.where(alive.to(wt.device).unsqueeze(1), wt / safe.unsqueeze(1), torch.zeros((), dtype=wt.dtype)).T.contiguous()
        if not bool(alive.any()):
            break
    return alphas, betas, length


def slq_density(
    op: HessianOperator,
    runs: int = 10,
    steps: int = 100,
    seed: int = 0,
    sigma: float | None = None,
    points: int = 1000,
) -> Density:
    """Return the SLQ spectral density: `runs` lockstep Lanczos runs of `steps` (at most the subspace dimension).

    phi(t) = (1/runs) sum_runs sum_k tau_k g(t; theta_k, sigma^2), tau_k = (e1^T u_k)^2 (paper.md 6.5);
    sigma^2 = 1e-5 * max(1, lambda_max - lambda_min) by default (PyHessian); the grid spans the
    nodes with a margin of 1% of the range plus 6 sigma.
    """
    if runs < 1 or steps < 1 or points < 2:
        raise ValueError("runs and steps must be positive and points at least 2")
    steps = min(steps, op.active)
    start = op.hvps
    alphas, betas, length = _lockstep_lanczos(op, runs, steps, generator(seed, "hessian.slq"))
    nodes = torch.zeros(runs, steps, dtype=torch.float64)
    weights = torch.zeros(runs, steps, dtype=torch.float64)
    for r in range(runs):
        m = length[r]
        t = torch.diag(alphas[r, :m])
        if m > 1:
            t += torch.diag(betas[r, : m - 1], 1) + torch.diag(betas[r, : m - 1], -1)
        theta, u = torch.linalg.eigh(t)
        nodes[r, :m] = theta
        weights[r, :m] = u[0] ** 2
    used = weights > 0
    lo = float(nodes[used].min()) if bool(used.any()) else 0.0
    hi = float(nodes[used].max()) if bool(used.any()) else 0.0
    if sigma is None:
        sigma = math.sqrt(1e-5 * max(1.0, hi - lo))
    margin = 0.01 * (hi - lo) + 6 * sigma
    grid = torch.linspace(lo - margin, hi + margin, points, dtype=torch.float64)
    dens = torch.zeros(points, dtype=torch.float64)
    norm = 1.0 / (sigma * math.sqrt(2 * math.pi))
    for r in range(runs):
        dens += (weights[r] * norm * torch.exp(-0.5 * ((grid[:, None] - nodes[r]) / sigma) ** 2)).sum(1)
    dens /= runs
    mass = float(torch.trapezoid(dens, grid))
    if mass > 0:
        dens = dens / mass
    return Density(grid, dens, nodes, weights, float(sigma), mass, op.active, op.hvps - start, length)


def slq_moments(density_or_nodes: Density | tuple[torch.Tensor, torch.Tensor], orders: Sequence[int] = (1, 2, 3, 4)) -> dict[int, Estimate]:
    """Return SLQ estimates of tr(H^k) / n for each order k (n = the subspace dimension), with run-to-run standard errors.

    Each run gives sum_k tau_k theta_k^order = v^T H^order v for its normalised start vector; with
    Rademacher starts that is an unbiased estimate of tr(H^order) / n.
    """
    if isinstance(density_or_nodes, Density):
        nodes, weights, hvps = density_or_nodes.nodes, density_or_nodes.weights, density_or_nodes.hvps
    else:
        nodes, weights = density_or_nodes
        hvps = 0
    out = {}
    for k in orders:
        per_run = (weights * nodes.double() ** int(k)).sum(1)
        mean, se = _mean_stderr(per_run)
        out[int(k)] = Estimate(mean, se, per_run.numel(), hvps)
    return out
