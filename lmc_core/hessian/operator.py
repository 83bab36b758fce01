"""Hessian of the mean cross-entropy loss as a matrix-free operator, and the estimators built on it.

The operator never forms H: a product H v is one extra backward pass through the gradient graph
(Pearlmutter 1994, "Fast exact multiplication by the Hessian"). What makes it fast and honest:

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
  generator (`foundations.seeding.generator`), never the global RNG.

Vectors are flat, the parameters concatenated in `named_parameters()` order.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import TypeAlias, cast

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from lmc_core.foundations.heap import roomy_heap
from lmc_core.foundations.types import Batch, Masks

MODES = ("eval", "train")
BLOCKS = ("loop", "vmap")

# What torch.autograd.grad returns with allow_unused=True: None for an input the output does not depend on
# (its stub says Tensor).
_Grads: TypeAlias = tuple[torch.Tensor | None, ...]


# ----------------------------------------------------------------------------- operator


class _EvalBatchNorm(nn.Module):
    """An eval-mode BatchNorm written as x * s + t, s = weight / sqrt(running_var + eps), t = bias - running_mean * s.

    The same parameters and buffers under the same names (so `named_parameters()` order and
    `functional_call` keys are unchanged) and the same values up to rounding. Why: the double backward
    of `native_batch_norm` always takes the training-mode formula (batch statistics, a dozen
    elementwise passes over the activations), a third of a ConvNetBN-D3W16 Hessian-vector product
    on the team's CPU; for a per-channel affine map it is two products.
    """

    # Buffers (registered in __init__; `_affine_batchnorm` only converts BatchNorms that have them).
    running_mean: torch.Tensor
    running_var: torch.Tensor
    num_batches_tracked: torch.Tensor

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
            if (
                isinstance(child, nn.modules.batchnorm._BatchNorm)
                and not child.training
                and child.track_running_stats
                and child.running_mean is not None
                and child.running_var is not None
            ):
                setattr(parent, name, _EvalBatchNorm(child))


class HessianOperator:
    """The Hessian of the mean cross-entropy over the union of `batches`, as a linear operator on flat vectors.

    `parameters` picks a subset of the named parameters (default: all, in `named_parameters()`
    order); `masks` (parameter name -> bool tensor, True = kept) restricts products to the
    unpruned subspace. With `mask_subspace=True` (default) the estimators also live in that
    subspace (`active` coordinates); with False they work in all `dim` coordinates, so the pruned
    directions show up as exact zero eigenvalues (what a `torch.nn.utils.prune` reparametrisation
    gives). `block` fixes how a block of vectors is multiplied: "loop" (one backward per vector, the
    default) or "vmap" (one batched backward; falls back to the loop for ops without a batching rule).
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
        block: str = "loop",
    ):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if block not in BLOCKS:
            raise ValueError(f"block must be one of {BLOCKS}, got {block!r}")
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

        # The private copy and the batches as the products see them (cast, on the device): the exact diagonal's
        # Gauss-Newton route (`hessian.ggn`) differentiates the same function of the same data.
        self.model: nn.Module = work
        self.batches: list[tuple[torch.Tensor, torch.Tensor]] = []

        total = 0
        self._grads: list[torch.Tensor] = []
        self._weights: list[float] = []
        sizes = []
        for x, y in batches:
            x = x.to(self.device)
            if x.is_floating_point():
                x = x.to(dtype)
            y = y.to(self.device)
            self.batches.append((x, y))
            with torch.enable_grad():
                out = functional_call(work, {**frozen, **buffers, **dict(zip(names, self._leaves, strict=True))}, (x,))
                loss = F.cross_entropy(out, y)
                grads = cast(_Grads, torch.autograd.grad(loss, self._leaves, create_graph=True, allow_unused=True))
                flat_g = torch.cat(
                    [(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(grads, self._leaves, strict=True)]
                )
            self._grads.append(flat_g)
            sizes.append(int(y.shape[0]))
            total += int(y.shape[0])
        self.num_examples = total
        self._weights = [n / total for n in sizes]
        self._batched_ok = True
        # How a block of b vectors is multiplied: b plain backwards ("loop") or one vmap'd backward
        # (`is_grads_batched`, "vmap"). The two agree only to rounding, so the choice is fixed up front,
        # never by timing: a result must not depend on the machine's load. Measured on the team's CPU
        # (2 threads): vmap 2x slower than the loop for ConvNetBN-D3W16 (76 vs 35 ms per product), equal
        # for the MLPs; hence the loop by default.
        self.block_strategy = block

    # -- products ------------------------------------------------------------------------

    def _project(self, v: torch.Tensor) -> torch.Tensor:
        return v if self.mask is None else torch.where(self.mask.view(-1, *([1] * (v.dim() - 1))), v, torch.zeros((), dtype=v.dtype))

    def _backward(self, g: torch.Tensor, v: torch.Tensor, batched: bool) -> torch.Tensor:
        parts: _Grads
        if batched:
            parts = cast(
                _Grads, torch.autograd.grad(g, self._leaves, grad_outputs=v, retain_graph=True, allow_unused=True, is_grads_batched=True)
            )
        else:
            # d(g . v)/d(theta) = H v, the same backward as grad_outputs=v; a scalar output also skips the
            # grad_outputs shape check, whose first call imports sympy (~0.4 s in a fresh process).
            parts = cast(_Grads, torch.autograd.grad(torch.dot(g, v), self._leaves, retain_graph=True, allow_unused=True))
        lead = (v.shape[0],) if batched else ()
        return torch.cat(
            [
                (h if h is not None else torch.zeros(*lead, *p.shape, dtype=self.dtype, device=self.device)).reshape(*lead, -1)
                for h, p in zip(parts, self._leaves, strict=True)
            ],
            dim=-1,
        )

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
        """Return H_b V for a block (P, cols >= 2) by the operator's block strategy."""
        if self.block_strategy == "vmap":
            try:
                return self._backward(g, v.T.contiguous(), batched=True).T
            except (RuntimeError, NotImplementedError):
                # An op without a batching rule: the loop from now on, recorded where the strategy is read.
                self._batched_ok = False
                self.block_strategy = "loop"
        return torch.stack([self._backward(g, v[:, j], batched=False) for j in range(cols)], dim=1)

    def _matvec(self, v: torch.Tensor, cols: int, out: torch.Tensor) -> torch.Tensor:
        for g, w in zip(self._grads, self._weights, strict=True):  # one gradient and one weight per batch
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
        return {n: v[a:b].reshape(s) for n, s, a, b in zip(self.names, self.shapes, self.offsets[:-1], self.offsets[1:], strict=True)}

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


def active_index(op: HessianOperator) -> torch.Tensor | None:
    return None if op.subspace is None else op.subspace.nonzero().squeeze(1)


def restrict(op: HessianOperator, v: torch.Tensor) -> torch.Tensor:
    """Zero the coordinates outside the operator's subspace."""
    if op.subspace is None:
        return v
    return torch.where(op.subspace.view(-1, *([1] * (v.dim() - 1))), v, torch.zeros((), dtype=v.dtype))


def rademacher(op: HessianOperator, n: int, g: torch.Generator) -> torch.Tensor:
    """Return (P, n) Rademacher probes in the operator's dtype, zero outside its subspace."""
    z = torch.randint(0, 2, (op.dim, n), generator=g).to(op.dtype).mul_(2).sub_(1)
    return restrict(op, z.to(op.device))


def gaussian(op: HessianOperator, n: int, g: torch.Generator) -> torch.Tensor:
    z = torch.randn(op.dim, n, generator=g, dtype=torch.float64).to(device=op.device, dtype=op.dtype)
    return restrict(op, z)


def breakdown(dtype: torch.dtype) -> float:
    """Relative size below which a new Lanczos direction is round-off (an invariant Krylov space)."""
    return 1e3 * torch.finfo(dtype).eps


def mean_stderr(samples: torch.Tensor) -> tuple[float, float]:
    n = samples.numel()
    mean = float(samples.mean())
    stderr = float(samples.std(unbiased=True) / math.sqrt(n)) if n > 1 else math.inf
    return mean, stderr
