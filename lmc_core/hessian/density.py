"""The Hessian spectral density by stochastic Lanczos quadrature (Ghorbani et al. 2019), with its moments."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from lmc_core.foundations.seeding import generator
from lmc_core.hessian.operator import HessianOperator, breakdown, mean_stderr, rademacher
from lmc_core.hessian.trace import Estimate

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
    v = rademacher(op, runs, g)
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
            if alive[r] and float(beta[r]) <= breakdown(op.dtype) * float(scale[r]):
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

    phi(t) = (1/runs) sum_runs sum_k tau_k g(t; theta_k, sigma^2), tau_k = (e1^T u_k)^2 (Ghorbani et al. 2019, section 3; Lin et al. 2016);
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
        mean, se = mean_stderr(per_run)
        out[int(k)] = Estimate(mean, se, per_run.numel(), hvps)
    return out
