"""Stage kinds of synthetic sets: MTT experts, the set itself (distilled or imported), and its evaluation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lmc_core.data.dsa import DSA, resolve_strategy
from lmc_core.distill.evaluation import evaluate_set
from lmc_core.distill.experts import Trajectories, train_experts
from lmc_core.distill.methods import distill
from lmc_core.foundations.config import DistillConfig
from lmc_core.foundations.events import Callback
from lmc_core.foundations.seeding import derive_seed
from lmc_core.foundations.version import versions
from lmc_core.studies.plan import Stage
from lmc_core.studies.run import Run
from lmc_core.studies.stages import StageKind


def _distill_config(run: Run, stage: Stage) -> DistillConfig:
    return run.cfg.synthetic.sets[stage.params["set"]]


def run_experts(run: Run, stage: Stage, out: Path, callback: Callback) -> dict[str, Any]:
    """Train and save the MTT expert trajectories a set distils from."""
    d = _distill_config(run, stage)
    augmenter = DSA(resolve_strategy(d.dsa, run.data.kind), run.data.kind)
    experts, examples = train_experts(
        run.data, d.model or run.cfg.model, d.mtt, augmenter, run.cfg.seed, stage=stage.key, callback=callback
    )
    experts.save(out)
    return {"experts": experts.experts, "epochs": experts.epochs, "examples": examples, "seed": run.cfg.seed}


def run_synthetic(run: Run, stage: Stage, out: Path, callback: Callback) -> dict[str, Any]:
    """Distil (or import) a synthetic set and save it with its provenance."""
    d = _distill_config(run, stage)
    experts = Trajectories.load(run.stage_dir(stage.deps[0])) if d.method == "mtt" else None
    made = distill(d, run.data, run.cfg.model, experts=experts, stage=stage.key, callback=callback)
    s = made.synthetic
    s.provenance["versions"] = versions()
    s.save(out)
    return {
        "method": d.method,
        "stored": len(s.labels),
        "decoded": s.decoded_count,
        "factor": s.factor,
        "learned_lr": s.lr,
        "real_examples": made.real_examples,
        "final_loss": made.losses[-1] if made.losses else None,
        "distill_seconds": made.seconds,
    }


def run_synthetic_eval(run: Run, stage: Stage, out: Path, callback: Callback) -> dict[str, Any]:
    """Train fresh networks on the set, on a size-matched real subset and on noise; return their accuracies."""
    name = stage.params["set"]
    return evaluate_set(
        run.synthetic_set(name),
        run.data,
        run.cfg.model,
        run.cfg.synthetic.train,
        run.synthetic_augmenter,
        runs=run.cfg.synthetic.evaluate_runs,
        seed=derive_seed(run.cfg.seed, f"evaluate-{name}"),
        stage=stage.key,
        callback=callback,
    )


EXPERTS = StageKind(run=run_experts)
SYNTHETIC = StageKind(run=run_synthetic)
SYNTHETIC_EVAL = StageKind(run=run_synthetic_eval)
