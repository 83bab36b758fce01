"""The Hessian diagonal: exact (the Gauss-Newton diagonal where it provably equals it, one product per coordinate
elsewhere) or a Hutchinson estimate with its per-entry standard error; every result says which it is."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from lmc_core.foundations.seeding import generator
from lmc_core.hessian.ggn import gauss_newton_exact, ggn_diagonal
from lmc_core.hessian.operator import HessianOperator, active_index, rademacher

METHODS = ("ggn-exact", "hvp-exact", "ggn+hvp-exact", "hutchinson")
ROUTES = ("auto", "hvp")
KINDS = ("exact", "hutchinson")


@dataclass(frozen=True)
class Diagonal:
    """A Hessian diagonal over the operator's `dim` coordinates (pruned entries 0) and how it was obtained.

    method: "ggn-exact" (every active entry is the Gauss-Newton diagonal, exact for this network), "hvp-exact" (one
    Hessian-vector product per active entry), "ggn+hvp-exact" (the two, per parameter), or "hutchinson" (an estimate
    from `samples` Rademacher probes, with per-entry standard errors `stderr`). `ggn` and `products` count the entries
    each exact route gave; `fallback` says, per parameter whose entries took products, why the GGN route did not apply.
    """

    values: torch.Tensor
    method: str
    stderr: torch.Tensor | None = None
    samples: int | None = None
    ggn: int = 0
    products: int = 0
    fallback: dict[str, str] = field(default_factory=dict)

    @property
    def exact(self) -> bool:
        return self.method != "hutchinson"

    def summary(self, mask: torch.Tensor | None = None) -> dict[str, Any]:
        """Return a JSON-able description and statistics over the unpruned entries (`mask`, True = kept)."""
        v = self.values if mask is None else self.values[mask]
        out: dict[str, Any] = {
            "method": self.method,
            "exact": self.exact,
            "sum": float(v.sum()),
            "mean": float(v.mean()) if v.numel() else 0.0,
            "max": float(v.max()) if v.numel() else 0.0,
            "ggn_entries": self.ggn,
            "hvp_entries": self.products,
        }
        if self.fallback:
            out["fallback"] = dict(self.fallback)
        if self.stderr is not None:
            se = self.stderr if mask is None else self.stderr[mask]
            out["samples"] = self.samples
            out["stderr_mean"] = float(se.mean()) if se.numel() else 0.0
            out["stderr_median"] = float(se.median()) if se.numel() else 0.0
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
        z = rademacher(op, b, g)
        d = (z * op.matvec(z)).double()
        s1 += d.sum(1)
        s2 += (d * d).sum(1)
        done += b
    mean = s1 / samples
    var = ((s2 - samples * mean * mean) / (samples - 1)).clamp_min(0)
    return mean.to(op.dtype), (var / samples).sqrt().to(op.dtype)


def _product_diagonal(op: HessianOperator, idx: torch.Tensor, diag: torch.Tensor, batch: int) -> None:
    """Write H_ii for the coordinates `idx` into `diag` from unit-vector products, `batch` columns per product."""
    for start in range(0, idx.numel(), batch):
        cols = idx[start : start + batch]
        e = torch.zeros(op.dim, cols.numel(), dtype=op.dtype, device=op.device)
        j = torch.arange(cols.numel(), device=op.device)
        e[cols, j] = 1
        diag[cols] = op.matvec(e)[cols, j]


def exact_diagonal(op: HessianOperator, batch: int = 64, route: str = "auto") -> Diagonal:
    """Return diag(H) exactly, as a `Diagonal` whose `method` says how (pruned entries 0, not computed).

    route="auto": the Gauss-Newton diagonal (C backward passes for C classes) for every parameter at which the
    network is piecewise linear in each single weight (`ggn.gauss_newton_exact` decides it from the module graph), where
    it equals the Hessian's; one unit-vector product per coordinate, `batch` columns per product, for the rest.
    route="hvp": products for every coordinate (the reference the Gauss-Newton route is tested against).
    """
    if route not in ROUTES:
        raise ValueError(f"route must be one of {ROUTES}, got {route!r}")
    if route == "auto":
        why = gauss_newton_exact(op.model)
        fallback = {n: r for n in op.names if (r := why[n]) is not None}
    else:
        fallback = dict.fromkeys(op.names, "route='hvp' asked for one product per weight")
    diag = torch.zeros(op.dim, dtype=op.dtype, device=op.device)
    chosen = [n for n in op.names if n not in fallback]
    if chosen:
        try:
            values = ggn_diagonal(op.model, op.batches, chosen)
        except (RuntimeError, NotImplementedError) as e:  # an op without a per-example (vmap) rule: products instead
            fallback.update(dict.fromkeys(chosen, f"per-example gradients failed ({type(e).__name__}: {e})"))
            chosen = []
        else:
            pos = 0
            for name, a, b in zip(op.names, op.offsets[:-1], op.offsets[1:], strict=True):
                if name in chosen:
                    diag[a:b] = values[pos : pos + b - a]
                    pos += b - a
    by_ggn = torch.zeros(op.dim, dtype=torch.bool, device=op.device)
    for name, a, b in zip(op.names, op.offsets[:-1], op.offsets[1:], strict=True):
        by_ggn[a:b] = name in chosen
    idx = active_index(op)
    if idx is None:
        idx = torch.arange(op.dim, device=op.device)
    products = idx[~by_ggn[idx]]
    _product_diagonal(op, products, diag, batch)
    if op.mask is not None:
        diag = torch.where(op.mask, diag, torch.zeros((), dtype=diag.dtype, device=diag.device))
    ggn = int(idx.numel() - products.numel())
    method = "ggn-exact" if products.numel() == 0 and ggn else ("hvp-exact" if ggn == 0 else "ggn+hvp-exact")
    return Diagonal(diag, method, ggn=ggn, products=int(products.numel()), fallback=fallback)


def hessian_diagonal(op: HessianOperator, kind: str = "exact", samples: int = 100, seed: int = 0) -> Diagonal:
    """Return the exact diagonal (`exact_diagonal`) or a Hutchinson estimate of `samples` probes, labelled either way."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if kind == "exact":
        return exact_diagonal(op)
    values, stderr = hutchinson_diagonal(op, samples, seed=seed)
    return Diagonal(values, "hutchinson", stderr=stderr, samples=samples)
