"""Stage kinds that train networks on real data: the init, the dense parent run to step k, and a pair's copies."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lmc_core.foundations.events import Callback
from lmc_core.foundations.layout import DENSE
from lmc_core.foundations.storage import save_tensors
from lmc_core.foundations.types import State
from lmc_core.models import count_parameters
from lmc_core.prune.magnitude import sparsity
from lmc_core.studies.plan import Stage
from lmc_core.studies.run import Run
from lmc_core.studies.stages import StageKind
from lmc_core.train.copies import train_copies
from lmc_core.train.evaluation import evaluate
from lmc_core.train.loop import train


def run_init(run: Run, stage: Stage, out: Path, callback: Callback) -> dict[str, Any]:
    """Save theta_0, the initialisation every mask source and copy starts from."""
    save_tensors(out / "state.safetensors", run.template.state_dict())
    return {"seed": run.cfg.seed, "parameters": count_parameters(run.template), "data": run.data.describe()}


def run_parent(run: Run, stage: Stage, out: Path, callback: Callback) -> dict[str, Any]:
    """Train the dense network from theta_0 to step k and save theta_k, the rewind point."""
    model = run.fresh_model()
    model.load_state_dict(run.load_state("init"))
    seed = run.cfg.stability.parent_seed
    res = train(
        model,
        run.data,
        run.cfg.train,
        run.augmenter,
        data_seed=seed,
        augment_seed=seed,
        end_step=stage.params["k"],
        stage=stage.key,
        callback=callback,
    )
    save_tensors(out / "state.safetensors", res.state)
    return {"seed": seed, "examples": res.examples, "history": res.history}


def run_copies(run: Run, stage: Stage, out: Path, callback: Callback) -> dict[str, Any]:
    """Train the subnetwork (mask, theta_k) from step k to the end once per seed of the pair; save and evaluate each copy.

    Under `pruning.rewind = "weights"` the start keeps the biases, norms and buffers of the network the mask pruned.
    """
    p = stage.params
    masks = None if p["mask"] == DENSE else run.load_masks(p["mask"])
    model = run.fresh_model()
    model.load_state_dict(run.start_state(p["mask"], p["k"]))
    seeds = run.cfg.stability.pairs[p["pair"]][: p["n_copies"]]
    start = {n: q.detach().clone() for n, q in model.named_parameters()}  # the masked rewind point both copies start from
    results = train_copies(
        model,
        run.data,
        run.cfg.train,
        run.augmenter,
        seeds=[(s, s) for s in seeds],
        masks=masks,
        start_step=p["k"],
        stage=stage.key,
        callback=callback,
        strategy="auto",
    )  # stacked only where bit-identical to the loop and measured faster
    copies = []
    for name, seed, res in zip("ab", seeds, results, strict=False):  # "ab" cut to the n_copies seeds (1 or 2): truncation intended
        save_tensors(out / f"{name}.safetensors", res.state)
        model.load_state_dict(res.state)
        metrics = {split: evaluate(model, x, y, run.cfg.train.eval_batch_size).as_dict() for split, (x, y) in run.splits().items()}
        copies.append(
            {
                "seed": seed,
                "examples": res.examples,
                "seconds": res.seconds,
                "metrics": metrics,
                "history": res.history,
                "distance_to_rewind": parameter_distance(res.state, start, list(start)),
            }
        )
    between = parameter_distance(results[0].state, results[1].state, list(start)) if len(results) == 2 else None
    return {"seeds": list(seeds), "sparsity": sparsity(masks) if masks else 0.0, "copies": copies, "distance_between_copies": between}


def parameter_distance(a: State, b: State, names: list[str]) -> float:
    """Return the Euclidean distance between two networks over the parameters `names` (buffers excluded), in float64.

    The distances the paper reports beside the barrier: between a pair's two copies, and from each copy to the rewind point.
    """
    return float(sum(float(((a[n].double().cpu() - b[n].double().cpu()) ** 2).sum()) for n in names) ** 0.5)


INIT = StageKind(run=run_init)
PARENT = StageKind(run=run_parent)
COPIES = StageKind(run=run_copies)
