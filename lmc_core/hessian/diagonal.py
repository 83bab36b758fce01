"""The Hessian diagonal: exact (one product per coordinate) or Hutchinson-estimated with its standard error."""

from __future__ import annotations

import torch

from lmc_core.foundations.seeding import generator
from lmc_core.hessian.operator import HessianOperator, active_index, rademacher

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
        z = rademacher(op, b, g)
        d = (z * op.matvec(z)).double()
        s1 += d.sum(1)
        s2 += (d * d).sum(1)
        done += b
    mean = s1 / samples
    var = ((s2 - samples * mean * mean) / (samples - 1)).clamp_min(0)
    return mean.to(op.dtype), (var / samples).sqrt().to(op.dtype)


def exact_diagonal(op: HessianOperator, batch: int = 64) -> torch.Tensor:
    """Return diag(H) exactly from unit-vector products, `batch` columns per product (pruned entries 0, not computed)."""
    idx = active_index(op)
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
