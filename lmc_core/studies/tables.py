"""The tables a run reports: the study table (barriers per subnetwork), analyses, and synthetic sets."""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from lmc_core.foundations.config import StudyConfig
from lmc_core.foundations.layout import DENSE, copies_key, eval_key, mask_id, mask_key, path_key, surface_key, synthetic_key
from lmc_core.studies.plan import analysis_stages, distance_stages, subnetworks, sweep_masks


class FinishedStages(Protocol):
    """What the tables read: the config and the stage.json of finished stages (a Run satisfies it)."""

    cfg: StudyConfig

    def is_done(self, key: str) -> bool: ...

    def stage_info(self, key: str) -> dict[str, Any]: ...


def study_table(run: FinishedStages) -> list[dict[str, Any]]:
    """Return one row per (source, rewind step, round): sparsity, accuracies, barriers (mean and spread over pairs), training points."""
    rows = [_row(run, s.source, s.round, s.mask, s.k) for s in subnetworks(run.cfg)]
    rows += [_row(run, "sweep", None, m, k) for m in sweep_masks(run.cfg) for k in run.cfg.sweep.steps]
    return [r for r in rows if r is not None]


def _row(run: FinishedStages, source: str, rnd: int | None, mid: str, k: int) -> dict[str, Any] | None:
    pairs = run.cfg.stability.pairs
    paths = [path_key(mid, k, p) for p in range(len(pairs))]
    if not all(run.is_done(key) for key in paths):
        return None
    copies = [c for p in range(len(pairs)) for c in run.stage_info(copies_key(mid, k, p))["copies"]]
    sparsity_ = run.stage_info(copies_key(mid, k, 0))["sparsity"]
    split = run.cfg.stability.splits[0]
    barriers = [run.stage_info(key)["barriers"][split] for key in paths]
    err = np.array([b["error"] for b in barriers]) * 100
    loss = np.array([b["loss"] for b in barriers])
    acc = [c["metrics"][split]["accuracy"] * 100 for c in copies]
    info = {} if mid == DENSE else run.stage_info(mask_key(mid))
    spent = info.get("examples", 0)
    distill = info.get("distill_examples", 0)  # None: an imported set whose cost its source does not report
    imp = mask_id("imp", k, rnd) if rnd else None
    reference = run.stage_info(mask_key(imp))["examples"] if imp and run.is_done(mask_key(imp)) else None
    return {
        "source": source,
        "round": rnd,
        "mask": mid,
        "rewind_step": k,
        "split": split,
        "sparsity": sparsity_ * 100,
        "accuracy": acc,
        "accuracy_mean": float(np.mean(acc)),
        "error_barrier": float(err.mean()),
        "error_barrier_std": float(err.std()),
        "error_barriers": err.tolist(),
        "loss_barrier": float(loss.mean()),
        "loss_barrier_std": float(loss.std()),
        "copy_distances": [run.stage_info(copies_key(mid, k, p)).get("distance_between_copies") for p in range(len(pairs))],
        "training_points": spent,
        "distill_points": distill,
        # Measured ratios, counted in decoded examples (a factor-2 image set trains on 4x its stored images): real IMP's
        # sample-gradients over this source's, without and with what distilling its set consumed (None: unknown or no IMP).
        "points_ratio": reference / spent if reference and spent else None,
        "points_ratio_with_distilling": reference / (spent + distill) if reference and spent and distill is not None else None,
    }


def analysis_table(run: FinishedStages) -> list[dict[str, Any]]:
    """Return one row per analysed subnetwork and pair: top eigenvalue, trace, and the surface's loss range, where done."""
    rows = []
    planned = analysis_stages(run.cfg)
    for key, stage in planned.items():
        if stage.kind != "hessian" or not run.is_done(key):
            continue
        p, info = stage.params, run.stage_info(key)
        row = {
            "mask": p["mask"],
            "rewind_step": p["k"],
            "pair": p["pair"],
            "lambda_max": (info.get("top_eigenvalues") or [None])[0],
            "trace": info["trace"],
            "trace_stderr": info["trace_stderr"],
            "active": info["active"],
            "hvps": info["hvps"],
        }
        skey = surface_key(p["mask"], p["k"], p["pair"])
        if run.is_done(skey):
            surface = run.stage_info(skey)
            row["surface_loss_min"], row["surface_loss_max"] = surface["loss_min"], surface["loss_max"]
        rows.append(row)
    for key, stage in planned.items():  # surfaces without a Hessian
        p = stage.params
        if (
            stage.kind == "surface"
            and run.is_done(key)
            and not any(r["mask"] == p["mask"] and r["rewind_step"] == p["k"] and r["pair"] == p["pair"] for r in rows)
        ):
            info = run.stage_info(key)
            rows.append(
                {
                    "mask": p["mask"],
                    "rewind_step": p["k"],
                    "pair": p["pair"],
                    "surface_loss_min": info["loss_min"],
                    "surface_loss_max": info["loss_max"],
                }
            )
    return rows


def synthetic_table(run: FinishedStages) -> list[dict[str, Any]]:
    """Return one row per synthetic set: method, size, learned lr, real examples used, and its evaluation when done."""
    rows = []
    for name in run.cfg.synthetic.sets:
        if not run.is_done(synthetic_key(name)):
            continue
        row = {"set": name, **run.stage_info(synthetic_key(name))}
        if run.is_done(eval_key(name)):
            row["evaluation"] = {
                k: v
                for k, v in run.stage_info(eval_key(name)).items()
                if k in ("synthetic", "random_subset", "noise", "random_subset_recipe_lr")
            }
        rows.append(row)
    return rows


def distance_table(run: FinishedStages) -> list[dict[str, Any]]:
    """Return one row per two masks of the same rewind step and round, where done: their Hamming distance over the prunable
    weights (fraction, count and total), the overlap and Jaccard index of the weights they keep, and chance's distance.

    Each row names both masks by source and init (`init_a`, `init_b`: the study's one init today), so comparisons across
    inits fit the same table.
    """
    rows: list[dict[str, Any]] = []
    for key in distance_stages(run.cfg):
        if run.is_done(key):
            rows.extend(run.stage_info(key)["rows"])
    return rows


def sharpness_table(run: FinishedStages) -> list[dict[str, Any]]:
    """Return one row per (rewind step, round, mask source) of the sharpness analysis, where done: the weights the source
    removed, the mean Hessian diagonal entry H_ii over them on the common network, and the random-removal null (its mean,
    central interval and one-sided permutation p-values, over `random_draws` draws)."""
    rows = []
    for key, stage in analysis_stages(run.cfg).items():
        if stage.kind != "sharpness" or not run.is_done(key):
            continue
        info = run.stage_info(key)
        for source, removal in info["removal"].items():
            stat = (removal.get("statistics") or {}).get("mean")
            rows.append(
                {
                    "rewind_step": stage.params["k"],
                    "round": stage.params["round"],
                    "source": source,
                    "reference_network": info["reference_network"],
                    "diagonal_method": info["diagonal"]["method"],
                    "diagonal_estimate": info["diagonal"]["estimate"],
                    "removed": removal["removed"],
                    "random_draws": removal["random_draws"],
                    "mean_removed": None if stat is None else stat["observed"],
                    "null_mean": None if stat is None else stat["null_mean"],
                    "null_interval": None if stat is None else stat["null_interval"],
                    "p_greater": None if stat is None else stat["p_greater"],
                    "p_less": None if stat is None else stat["p_less"],
                }
            )
    return rows
