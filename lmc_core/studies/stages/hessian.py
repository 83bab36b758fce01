"""The Hessian stage kind: top eigenvalues, trace, spectral density and diagonal of copy A in its unpruned subspace.

`info["diagonal"]["method"]` records how the diagonal was obtained (ggn-exact, hvp-exact, ggn+hvp-exact or hutchinson);
an estimate also saves its per-entry standard errors (`diagonal_stderr` in hessian.npz) and their mean and median.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from lmc_core.foundations.config import StudyConfig
from lmc_core.foundations.events import Callback, Event
from lmc_core.foundations.layout import DENSE, copies_key, hessian_key
from lmc_core.foundations.storage import save_arrays
from lmc_core.hessian.density import slq_density
from lmc_core.hessian.diagonal import hessian_diagonal
from lmc_core.hessian.eigen import lanczos
from lmc_core.hessian.operator import HessianOperator
from lmc_core.hessian.trace import trace as hessian_trace
from lmc_core.studies.plan import Stage, Subnetwork
from lmc_core.studies.run import Run
from lmc_core.studies.stages import StageKind


def run_hessian(run: Run, stage: Stage, out: Path, callback: Callback) -> dict[str, Any]:
    """Measure the curvature `analysis.hessian` asks for on a fixed training batch; save the arrays, return the numbers."""
    p, spec = stage.params, run.cfg.analysis.hessian
    assert spec is not None  # planned only when configured
    masks = None if p["mask"] == DENSE else run.load_masks(p["mask"])
    model = run.fresh_model()
    model.load_state_dict(run.load_state(copies_key(p["mask"], p["k"], p["pair"]), "a"))
    batch = (run.data.x_train[: spec.examples], run.data.y_train[: spec.examples])
    op = HessianOperator(model, [batch], masks=masks, mode=spec.mode)
    info: dict[str, Any] = {"examples": len(batch[0]), "parameters": op.dim, "active": op.active, "mode": spec.mode}
    arrays: dict[str, np.ndarray] = {}
    if spec.top_k:
        eig = lanczos(op, min(spec.top_k, op.active), which="LA", tol=spec.tol, seed=spec.seed)
        info["top_eigenvalues"] = [float(v) for v in eig.values]
        info["eigen_residuals"] = [float(r) for r in eig.residuals]
        info["eigen_converged"] = bool(eig.converged)
        callback(Event(stage.key, 1, 4, {"lambda_max": info["top_eigenvalues"][0]}))
    est = hessian_trace(op, rel_tol=spec.trace_rel_tol, max_hvps=spec.trace_max_hvps, seed=spec.seed)
    info["trace"], info["trace_stderr"], info["trace_hvps"] = est.value, est.stderr, est.hvps
    callback(Event(stage.key, 2, 4, {"trace": est.value}))
    if spec.density_runs:
        dens = slq_density(op, runs=spec.density_runs, steps=min(spec.density_steps, op.active), seed=spec.seed)
        arrays["density_grid"], arrays["density"] = dens.grid.cpu().numpy(), dens.density.cpu().numpy()
        arrays["density_nodes"], arrays["density_weights"] = dens.nodes.cpu().numpy(), dens.weights.cpu().numpy()
    callback(Event(stage.key, 3, 4))
    if spec.diagonal != "none":
        # What was computed, not what was asked: "exact" resolves to ggn-exact, hvp-exact or both, per the network's layers.
        diag = hessian_diagonal(op, spec.diagonal, samples=spec.diagonal_samples, seed=spec.seed)
        arrays["diagonal"] = diag.values.cpu().numpy()
        if diag.stderr is not None:
            arrays["diagonal_stderr"] = diag.stderr.cpu().numpy()
        info["diagonal"] = diag.summary(op.mask)
    callback(Event(stage.key, 4, 4))
    info["hvps"] = op.hvps
    save_arrays(out / "hessian.npz", arrays)
    return info


def plan_hessian(cfg: StudyConfig, s: Subnetwork, pair: int) -> Stage | None:
    """Return the hessian stage of subnetwork `s` and seed pair `pair` when `analysis.hessian` is configured.

    It needs the copies (copy A is analysed).
    """
    if cfg.analysis.hessian is None:
        return None
    key = hessian_key(s.mask, s.k, pair)
    return Stage(key, "hessian", (copies_key(s.mask, s.k, pair),), {"mask": s.mask, "k": s.k, "pair": pair})


HESSIAN = StageKind(run=run_hessian, plan=plan_hessian)
