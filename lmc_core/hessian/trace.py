"""The Hessian trace: Hutchinson and Hutch++ (Meyer et al. 2021) estimates with their standard errors, and per-layer traces."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lmc_core.foundations.seeding import generator
from lmc_core.hessian.operator import HessianOperator, active_index, mean_stderr, rademacher

TRACE_METHODS = ("hutch++", "hutchinson")


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
    total: list[torch.Tensor] = []
    blocks: list[list[torch.Tensor]] = [[] for _ in op.names]
    done = 0
    while done < n:
        b = min(batch, n - done)
        z = rademacher(op, b, g)
        hz = op.matvec(z)
        prod = z * hz
        total.append(prod.sum(0))
        for i, (a, c) in enumerate(zip(op.offsets[:-1], op.offsets[1:], strict=True)):
            blocks[i].append(prod[a:c].sum(0))
        done += b
    return torch.cat(total), [torch.cat(x) for x in blocks]


def hutchinson_trace(op: HessianOperator, samples: int, seed: int = 0, batch: int = 16) -> Estimate:
    """Return Hutchinson's estimate (1/m) sum z^T H z over `samples` Rademacher probes (zero at pruned coordinates)."""
    if samples < 1:
        raise ValueError(f"samples must be positive, got {samples}")
    start = op.hvps
    q, _ = _quadratic_forms(op, samples, generator(seed, "hessian.hutchinson"), batch)
    mean, se = mean_stderr(q.double())
    return Estimate(mean, se, samples, op.hvps - start)


def _sketch(op: HessianOperator, s: int, g: torch.Generator) -> tuple[torch.Tensor, float]:
    """Return Q (P, s') orthonormal, spanning H S for s Rademacher probes, inside the subspace, and tr(Q^T H Q)."""
    y = op.matvec(rademacher(op, s, g))
    idx = active_index(op)
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
        z = rademacher(op, b, g)
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
    mean, se = mean_stderr(tail)
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
            z = rademacher(op, b, g)
            forms.append((z * op.matvec(z)).sum(0).double())
        else:
            forms.append(_deflated_forms(op, q, b, g, b).double())
        x = torch.cat(forms)
        if x.numel() >= 2:
            mean, se = mean_stderr(x)
            value = head + mean
            if se <= rel_tol * abs(value):
                break
    x = torch.cat(forms)
    mean, se = mean_stderr(x)
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
    for name, x in zip(op.names, blocks, strict=True):  # one block per parameter tensor
        mean, se = mean_stderr(x.double())
        out[name] = Estimate(mean, se, samples, cost)
    return out
