"""Studies: a config becomes a graph of stages; a run directory persists each stage and resumes.

Stages (keys double as folders under `<run>/stages/`):
  init                     the initialisation theta_0 (init seed)
  parent/k{K}              the dense network trained to step K (the rewind point theta_K)
  mask/{mask id}           a mask source's round-r mask found with rewind step k
  copies/{mask id}/k{K}/p{P} the subnetwork (mask, theta_K) trained from step K to the end twice, with
                             pair P's two SGD-noise seeds (copy A and copy B)
  path/{mask id}/k{K}/p{P}   the linear path between pair P's two copies, with its barriers
  experts/{hash}           MTT expert trajectories, shared by every set with the same data, network and expert settings
  synthetic/{set}          a distilled (or imported) synthetic set
  synthetic-eval/{set}     fresh networks trained on the set, on a size-matched real subset and on noise
  surface/{mask id}/k{K}/p{P}  a 2-D loss surface through pair P's copies (analysis.surface)
  hessian/{mask id}/k{K}/p{P}  the Hessian of pair P's copy A in its unpruned subspace (analysis.hessian)

A stage is done when its `stage.json` exists; that file is written last, so an interrupted run
loses at most the stage in flight. Stages are pure functions of the config and their dependencies,
which is what lets a later layer run independent stages on different workers.
"""

from __future__ import annotations

import copy
import platform
import shutil
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lmc_core import __version__
from lmc_core.data.augment import Augmenter
from lmc_core.foundations.config import DistillConfig, StudyConfig
from lmc_core.connectivity.path import PathResult, alpha_grid, evaluate_path
from lmc_core.data.dataset import Dataset, load_dataset
from lmc_core.foundations.device import resolve_device
from lmc_core.train.evaluation import evaluate
from lmc_core.foundations.events import Callback, Event, no_callback
from lmc_core.distill.methods import distill
from lmc_core.data.dsa import DSA, resolve_strategy
from lmc_core.distill.experts import Trajectories, experts_hash, train_experts
from lmc_core.hessian.operator import HessianOperator, exact_diagonal, hutchinson_diagonal, lanczos, slq_density
from lmc_core.hessian.operator import trace as hessian_trace
from lmc_core.landscape.surface import Surface, evaluate_surface, grid_axis, plane_through, random_plane
from lmc_core.prune.sources import DENSE, copies_key, get_mask_source, mask_id, mask_key, path_key, rewind_key, synthetic_key
from lmc_core.models import build_model, count_parameters
from lmc_core.prune.magnitude import Masks, State, dense_masks, layer_sparsity, rewind, sparsity
from lmc_core.foundations.seeding import derive_seed
from lmc_core.foundations.storage import load_arrays, load_json, load_tensors, save_arrays, save_json, save_tensors
from lmc_core.distill.synthetic import SyntheticSet
from lmc_core.distill.evaluation import evaluate_set, matched_subset, recipe
from lmc_core.train.loop import TrainResult, total_steps, train, train_copies


@dataclass(frozen=True)
class Stage:
    key: str
    kind: str
    deps: tuple[str, ...] = ()
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Subnetwork:
    """A mask trained from rewind step k: the unit whose stability a study measures."""

    source: str
    round: int
    mask: str
    k: int


def subnetworks(cfg: StudyConfig) -> list[Subnetwork]:
    """Return every (source, round, mask, k) the study measures, in table order."""
    tested = cfg.stability.rounds
    out = []
    for k in cfg.pruning.rewind_steps:
        for source in cfg.pruning.mask_sources:
            for r in get_mask_source(source).rounds(cfg):
                if tested is None or r in tested:
                    out.append(Subnetwork(source, r, mask_id(source, k, r), k))
    return out


def masks_needed(cfg: StudyConfig) -> list[Subnetwork]:
    """Return every (source, round, k) whose mask the study could build; `plan` builds those something depends on."""
    return [Subnetwork(source, r, mask_id(source, k, r), k) for k in cfg.pruning.rewind_steps
            for source in cfg.pruning.mask_sources for r in get_mask_source(source).rounds(cfg)]


def experts_key(cfg: StudyConfig, set_name: str) -> str:
    d = cfg.synthetic.sets[set_name]
    return f"experts/{experts_hash(cfg.data, d.model or cfg.model, d.mtt, d.dsa, cfg.seed)}"


def eval_key(set_name: str) -> str:
    return f"synthetic-eval/{set_name}"


def _sweep_masks(cfg: StudyConfig) -> list[str]:
    known = {s.mask for s in subnetworks(cfg)}
    bad = [m for m in cfg.sweep.masks if m not in known]
    if bad and cfg.sweep.steps:
        raise ValueError(f"sweep.masks: {bad} not produced by this study; choose from {sorted(known)}")
    return cfg.sweep.masks if cfg.sweep.steps else []


def plan(cfg: StudyConfig) -> list[Stage]:
    """Return the study's stages in an order where every stage follows its dependencies."""
    stages: dict[str, Stage] = {"init": Stage("init", "init")}
    for name, d in cfg.synthetic.sets.items():
        deps: tuple[str, ...] = ()
        if d.method == "mtt":
            deps = (experts_key(cfg, name),)
            stages.setdefault(deps[0], Stage(deps[0], "experts", (), {"set": name}))
        stages[synthetic_key(name)] = Stage(synthetic_key(name), "synthetic", deps, {"set": name})
        if cfg.synthetic.evaluate_runs:
            stages[eval_key(name)] = Stage(eval_key(name), "synthetic_eval", (synthetic_key(name),), {"set": name})
    pairs = cfg.stability.pairs
    points: list[tuple[str, int]] = [(s.mask, s.k) for s in subnetworks(cfg)]
    points += [(m, k) for m in _sweep_masks(cfg) for k in cfg.sweep.steps]
    for k in sorted({k for _, k in points}):
        if k > 0:
            stages[rewind_key(k)] = Stage(rewind_key(k), "parent", ("init",), {"k": k})
    for mid, k in points:
        for p in range(len(pairs)):
            ckey, pkey = copies_key(mid, k, p), path_key(mid, k, p)
            stages.setdefault(ckey, _copies_stage(mid, k, p, len(pairs[p])))
            stages.setdefault(pkey, Stage(pkey, "path", (ckey,), {"mask": mid, "k": k, "pair": p}))
    for key, stage in analysis_stages(cfg).items():
        stages[key] = stage
    _add_dependencies(cfg, stages)
    return _topological(stages)


def surface_key(mid: str, k: int, pair: int) -> str:
    return f"surface/{mid}/k{k}/p{pair}"


def hessian_key(mid: str, k: int, pair: int) -> str:
    return f"hessian/{mid}/k{k}/p{pair}"


def analysis_stages(cfg: StudyConfig) -> dict[str, Stage]:
    """Return the surface and Hessian stages of the tested subnetworks that `cfg.analysis` selects."""
    a = cfg.analysis
    out: dict[str, Stage] = {}
    for s in subnetworks(cfg):
        if (a.rounds is not None and s.round not in a.rounds) or (a.mask_sources is not None and s.source not in a.mask_sources):
            continue
        for p in a.pairs:
            params = {"mask": s.mask, "k": s.k, "pair": p}
            deps = (copies_key(s.mask, s.k, p), rewind_key(s.k))
            if a.surface is not None:
                out.setdefault(surface_key(s.mask, s.k, p), Stage(surface_key(s.mask, s.k, p), "surface", deps, params))
            if a.hessian is not None:
                out.setdefault(hessian_key(s.mask, s.k, p), Stage(hessian_key(s.mask, s.k, p), "hessian", deps[:1], params))
    return out


def _add_dependencies(cfg: StudyConfig, stages: dict[str, Stage]) -> None:
    """Add the mask stages the tested subnetworks need, and the masks and copy-A trainings their IMP chains pass through.

    Only what something depends on is planned: an untested round costs one copy (IMP prunes copy A),
    and a round after the last tested one costs nothing.
    """
    masks = {mask_key(s.mask): s for s in masks_needed(cfg) if s.round > 0}
    todo = [dep for stage in stages.values() for dep in stage.deps]
    while todo:
        key = todo.pop()
        if key in stages:
            continue
        if key in masks:
            s = masks[key]
            stages[key] = Stage(key, "mask", tuple(get_mask_source(s.source).dependencies(cfg, s.k, s.round)),
                                {"source": s.source, "k": s.k, "round": s.round})
        elif key.startswith("copies/"):  # copies that only an IMP chain needs (an untested round): copy A alone
            _, mid, kk, _ = key.split("/")
            stages[key] = _copies_stage(mid, int(kk[1:]), 0, 1)
        else:
            continue  # not plannable here; _topological names it
        todo.extend(stages[key].deps)


def _copies_stage(mid: str, k: int, pair: int, copies: int) -> Stage:
    deps = (rewind_key(k),) if mid == DENSE else (rewind_key(k), mask_key(mid))
    return Stage(copies_key(mid, k, pair), "copies", deps, {"mask": mid, "k": k, "pair": pair, "n_copies": copies})


def _topological(stages: dict[str, Stage]) -> list[Stage]:
    done: set[str] = set()
    order: list[Stage] = []

    def visit(key: str, trail: tuple[str, ...]) -> None:
        if key in done:
            return
        if key in trail:
            raise ValueError(f"stage cycle: {' -> '.join(trail + (key,))}")
        if key not in stages:
            raise ValueError(f"stage {trail[-1]} depends on {key}, which the study does not plan")
        for dep in stages[key].deps:
            visit(dep, trail + (key,))
        done.add(key)
        order.append(stages[key])

    for key in stages:
        visit(key, ())
    return order


def versions() -> dict[str, str]:
    """Return the versions a result depends on, recorded with every run."""
    return {"lmc_lab": __version__, "torch": torch.__version__, "numpy": np.__version__, "python": platform.python_version(),
            # CPU GEMMs split sums by thread count, so weights depend on it at the last bit (and, after chaos, beyond).
            "torch_threads": str(torch.get_num_threads())}


class Run:
    """A study's run directory: plans, executes and reloads stages. Re-running skips finished stages."""

    def __init__(self, cfg: StudyConfig, root: str | Path = "runs"):
        self.cfg = cfg
        self.id = cfg.run_id()
        self.dir = Path(root) / self.id
        self.stages = plan(cfg)
        self._by_key = {s.key: s for s in self.stages}

    # ---- lazily built context -------------------------------------------------------------
    @cached_property
    def device(self) -> torch.device:
        return resolve_device(self.cfg.device)

    @cached_property
    def data(self) -> Dataset:
        return load_dataset(self.cfg.data).to(self.device)

    @cached_property
    def augmenter(self) -> Augmenter:
        return Augmenter(self.cfg.data, self.data.kind)

    @cached_property
    def template(self) -> torch.nn.Module:
        """The architecture on the device; stages copy it and never train it."""
        return build_model(self.cfg.model, self.data.input_shape, self.data.num_classes, self.cfg.seed).to(self.device)

    @cached_property
    def synthetic_augmenter(self) -> DSA:
        """The DSA applied whenever a network trains on a synthetic set or its size-matched real subset."""
        return DSA(resolve_strategy(self.cfg.synthetic.augmentation, self.data.kind), self.data.kind)

    @property
    def total_steps(self) -> int:
        return total_steps(self.cfg.train, len(self.data.x_train))

    # ---- files ----------------------------------------------------------------------------
    def stage_dir(self, key: str) -> Path:
        return self.dir / "stages" / key

    def is_done(self, key: str) -> bool:
        return (self.stage_dir(key) / "stage.json").is_file()

    def stage_info(self, key: str) -> dict[str, Any]:
        return load_json(self.stage_dir(key) / "stage.json")

    def load_state(self, key: str, name: str = "state") -> State:
        """Return the weights a stage saved: "state" for init and parents, "a" / "b" for a pair's copies."""
        return load_tensors(self.stage_dir(key) / f"{name}.safetensors")

    def load_masks(self, mid: str) -> Masks:
        return dense_masks(self.template) if mid == DENSE else load_tensors(self.stage_dir(mask_key(mid)) / "masks.safetensors")

    def load_path(self, key: str) -> PathResult:
        info = self.stage_info(key)
        return PathResult.from_arrays(load_arrays(self.stage_dir(key) / "path.npz"), info["bn_mode"])

    def synthetic_set(self, name: str) -> SyntheticSet:
        return SyntheticSet.load(self.stage_dir(synthetic_key(name)))

    def synthetic_dataset(self, name: str) -> Dataset:
        return self.synthetic_set(name).as_dataset(self.data)

    def subset_dataset(self, name: str) -> Dataset:
        """Return the random real subset with set `name`'s class counts (the control of distilled pruning)."""
        return matched_subset(self.synthetic_set(name), self.data, self.cfg.seed).as_dataset(self.data)

    def train_on_small_set(self, train_set: Dataset, k: int, masks: Masks | None, set_name: str, stage: str, callback: Callback) -> TrainResult:
        """Train the subnetwork (masks, theta_k) on a synthetic set or its matched subset with the synthetic recipe.

        The set's learned lr (MTT) applies to its matched subset too, so the control differs only in the data.
        The noise seeds are pair 0's copy A seeds, the copy real-data IMP prunes.
        """
        lr = self.synthetic_set(set_name).lr if self.cfg.synthetic.use_learned_lr else None
        model = self._fresh_model()
        rewind(model, self.load_state(rewind_key(k)), masks)
        seed = self.cfg.stability.pairs[0][0]
        return train(model, train_set, recipe(self.cfg.synthetic.train, lr), self.synthetic_augmenter, data_seed=seed, augment_seed=seed,
                     masks=masks, stage=stage, callback=callback)

    def parent_examples(self, k: int) -> int:
        return 0 if k == 0 else self.stage_info(rewind_key(k))["examples"]

    def write_manifest(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        save_json(self.dir / "config.json", self.cfg.model_dump(mode="json"))
        manifest = self.dir / "manifest.json"
        if not manifest.exists():
            save_json(manifest, {"run_id": self.id, "name": self.cfg.name, "created": time.time(), "versions": versions()})

    # ---- execution ------------------------------------------------------------------------
    def run(self, callback: Callback = no_callback) -> list[dict[str, Any]]:
        """Execute every unfinished stage in order and return the study table (see `table`)."""
        self.write_manifest()
        todo = [s for s in self.stages if not self.is_done(s.key)]
        done = len(self.stages) - len(todo)
        callback(Event("study", done, len(self.stages), message=f"{len(todo)} of {len(self.stages)} stages to run"))
        for stage in todo:
            self.execute(stage, callback)
            done += 1
            callback(Event("study", done, len(self.stages), message=stage.key))
        return self.table()

    def execute(self, stage: Stage, callback: Callback = no_callback) -> dict[str, Any]:
        """Run one stage whose dependencies are done, persist its outputs, and return its stage.json."""
        missing = [d for d in stage.deps if not self.is_done(d)]
        if missing:
            raise RuntimeError(f"stage {stage.key} needs unfinished stages {missing}")
        out = self.stage_dir(stage.key)
        if out.exists():  # leftovers of an interrupted attempt
            shutil.rmtree(out)
        out.mkdir(parents=True)
        t0 = time.perf_counter()
        info = getattr(self, f"_stage_{stage.kind}")(stage, out, callback)
        info = {"key": stage.key, "kind": stage.kind, **stage.params, **info, "seconds": time.perf_counter() - t0, "device": str(self.device)}
        save_json(out / "stage.json", info)
        return info

    def _fresh_model(self) -> torch.nn.Module:
        return copy.deepcopy(self.template)

    def _stage_init(self, stage: Stage, out: Path, callback: Callback) -> dict[str, Any]:
        save_tensors(out / "state.safetensors", self.template.state_dict())
        return {"seed": self.cfg.seed, "parameters": count_parameters(self.template), "data": self.data.describe()}

    def _stage_parent(self, stage: Stage, out: Path, callback: Callback) -> dict[str, Any]:
        model = self._fresh_model()
        model.load_state_dict(self.load_state("init"))
        seed = self.cfg.stability.parent_seed
        res = train(model, self.data, self.cfg.train, self.augmenter, data_seed=seed, augment_seed=seed,
                    end_step=stage.params["k"], stage=stage.key, callback=callback)
        save_tensors(out / "state.safetensors", res.state)
        return {"seed": seed, "examples": res.examples, "history": res.history}

    def _stage_mask(self, stage: Stage, out: Path, callback: Callback) -> dict[str, Any]:
        p = stage.params
        masks, spent = get_mask_source(p["source"]).build(self, p["k"], p["round"], callback)
        save_tensors(out / "masks.safetensors", masks)
        return {"sparsity": sparsity(masks), "layer_sparsity": layer_sparsity(masks), **spent}

    def _distill_config(self, stage: Stage) -> DistillConfig:
        return self.cfg.synthetic.sets[stage.params["set"]]

    def _stage_experts(self, stage: Stage, out: Path, callback: Callback) -> dict[str, Any]:
        d = self._distill_config(stage)
        augmenter = DSA(resolve_strategy(d.dsa, self.data.kind), self.data.kind)
        experts, examples = train_experts(self.data, d.model or self.cfg.model, d.mtt, augmenter, self.cfg.seed, stage=stage.key, callback=callback)
        experts.save(out)
        return {"experts": experts.experts, "epochs": experts.epochs, "examples": examples, "seed": self.cfg.seed}

    def _stage_synthetic(self, stage: Stage, out: Path, callback: Callback) -> dict[str, Any]:
        d = self._distill_config(stage)
        experts = Trajectories.load(self.stage_dir(stage.deps[0])) if d.method == "mtt" else None
        made = distill(d, self.data, self.cfg.model, experts=experts, stage=stage.key, callback=callback)
        s = made.synthetic
        s.provenance["versions"] = versions()
        s.save(out)
        return {"method": d.method, "stored": len(s.labels), "decoded": s.decoded_count, "factor": s.factor, "learned_lr": s.lr,
                "real_examples": made.real_examples, "final_loss": made.losses[-1] if made.losses else None,
                "distill_seconds": made.seconds}

    def _stage_synthetic_eval(self, stage: Stage, out: Path, callback: Callback) -> dict[str, Any]:
        name = stage.params["set"]
        return evaluate_set(self.synthetic_set(name), self.data, self.cfg.model, self.cfg.synthetic.train, self.synthetic_augmenter,
                            runs=self.cfg.synthetic.evaluate_runs, seed=derive_seed(self.cfg.seed, f"evaluate-{name}"),
                            stage=stage.key, callback=callback)

    def _stage_surface(self, stage: Stage, out: Path, callback: Callback) -> dict[str, Any]:
        p, spec = stage.params, self.cfg.analysis.surface
        assert spec is not None  # planned only when configured
        masks = None if p["mask"] == DENSE else self.load_masks(p["mask"])
        ckey = copies_key(p["mask"], p["k"], p["pair"])
        a, b = self._to_device(self.load_state(ckey, "a")), self._to_device(self.load_state(ckey, "b"))
        params = {n for n, _ in self.template.named_parameters()}
        if spec.plane == "copies":
            start = self._to_device(self.load_state(rewind_key(p["k"])))
            if masks:
                start = {n: v * masks[n].to(v.device, v.dtype) if n in masks else v for n, v in start.items()}
            plane = plane_through(start, a, b, names=("rewind", "A", "B"))
            reach = max(max(abs(x), abs(y)) for x, y in plane.points.values())
            span = spec.span * 1.25 * reach  # a margin beyond the farthest model
        else:
            plane = random_plane({n: v for n, v in a.items() if n in params}, masks=masks, seed=spec.seed)
            span = spec.span
        axis = grid_axis(span, spec.resolution)
        x, y = self._splits_all()[spec.split]
        data = {spec.split: (x[: spec.examples], y[: spec.examples])}

        def progress(done: int, total: int, partial: Any) -> None:
            callback(Event(stage.key, done, total))

        surface = evaluate_surface(self.template, plane, axis, axis, data, masks=masks, bn_mode=self.cfg.stability.bn_mode,
                                   calibration=self.data.x_train, bn_batches=self.cfg.stability.bn_batches,
                                   batch_size=self.cfg.train.eval_batch_size, callback=progress)
        save_arrays(out / "surface.npz", surface.to_arrays())
        loss = surface.loss[spec.split]
        return {"plane": spec.plane, "points": {k: list(v) for k, v in plane.points.items()}, "span": float(span),
                "resolution": spec.resolution, "split": spec.split, "examples": len(data[spec.split][0]),
                "loss_min": float(np.nanmin(loss)), "loss_max": float(np.nanmax(loss)), "bn_mode": surface.bn_mode,
                "strategy": surface.strategy, "cosine": plane.info.get("cosine")}

    def _stage_hessian(self, stage: Stage, out: Path, callback: Callback) -> dict[str, Any]:
        p, spec = stage.params, self.cfg.analysis.hessian
        assert spec is not None  # planned only when configured
        masks = None if p["mask"] == DENSE else self.load_masks(p["mask"])
        model = self._fresh_model()
        model.load_state_dict(self.load_state(copies_key(p["mask"], p["k"], p["pair"]), "a"))
        batch = (self.data.x_train[: spec.examples], self.data.y_train[: spec.examples])
        op = HessianOperator(model, [batch], masks=masks, mode="eval")
        info: dict[str, Any] = {"examples": len(batch[0]), "parameters": op.dim, "active": op.active, "mode": "eval"}
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
            diag = exact_diagonal(op) if spec.diagonal == "exact" else hutchinson_diagonal(op, spec.diagonal_samples, seed=spec.seed)[0]
            arrays["diagonal"] = diag.cpu().numpy()
            active = diag[op.mask] if op.mask is not None else diag
            info["diagonal"] = {"method": spec.diagonal, "sum": float(active.sum()), "mean": float(active.mean()), "max": float(active.max())}
        callback(Event(stage.key, 4, 4))
        info["hvps"] = op.hvps
        save_arrays(out / "hessian.npz", arrays)
        return info

    def _splits_all(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        d = self.data
        return {"test": (d.x_test, d.y_test), "train": (d.x_train, d.y_train)}

    def load_surface(self, key: str) -> Surface:
        return Surface.from_arrays(load_arrays(self.stage_dir(key) / "surface.npz"))

    def _stage_copies(self, stage: Stage, out: Path, callback: Callback) -> dict[str, Any]:
        p = stage.params
        masks = None if p["mask"] == DENSE else self.load_masks(p["mask"])
        model = self._fresh_model()
        rewind(model, self.load_state(rewind_key(p["k"])), masks)
        seeds = self.cfg.stability.pairs[p["pair"]][: p["n_copies"]]
        results = train_copies(model, self.data, self.cfg.train, self.augmenter, seeds=[(s, s) for s in seeds],
                               masks=masks, start_step=p["k"], stage=stage.key, callback=callback,
                               strategy="auto")  # stacked only where bit-identical to the loop and measured faster
        copies = []
        for name, seed, res in zip("ab", seeds, results):
            save_tensors(out / f"{name}.safetensors", res.state)
            model.load_state_dict(res.state)
            metrics = {split: evaluate(model, x, y, self.cfg.train.eval_batch_size).as_dict() for split, (x, y) in self._splits().items()}
            copies.append({"seed": seed, "examples": res.examples, "seconds": res.seconds, "metrics": metrics, "history": res.history})
        return {"seeds": list(seeds), "sparsity": sparsity(masks) if masks else 0.0, "copies": copies}

    def _stage_path(self, stage: Stage, out: Path, callback: Callback) -> dict[str, Any]:
        p = stage.params
        a, b = self.cfg.stability.pairs[p["pair"]]
        masks = None if p["mask"] == DENSE else self.load_masks(p["mask"])
        st = self.cfg.stability
        result = evaluate_path(
            self.template,
            self._to_device(self.load_state(copies_key(p["mask"], p["k"], p["pair"]), "a")),
            self._to_device(self.load_state(copies_key(p["mask"], p["k"], p["pair"]), "b")),
            self._splits(),
            alpha_grid(st.alphas),
            bn_mode=st.bn_mode,
            calibration=self.data.x_train,
            bn_batches=st.bn_batches,
            masks=(masks, masks),
            batch_size=self.cfg.train.eval_batch_size,
        )
        save_arrays(out / "path.npz", result.to_arrays())
        return {"seeds": [a, b], "bn_mode": result.bn_mode, "barriers": result.barriers()}

    def _splits(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        both = self._splits_all()
        return {s: both[s] for s in self.cfg.stability.splits}

    def _to_device(self, state: State) -> State:
        return {k: v.to(self.device) for k, v in state.items()}

    # ---- results --------------------------------------------------------------------------
    def table(self) -> list[dict[str, Any]]:
        """Return one row per (source, rewind step, round): sparsity, accuracies, barriers (mean and spread over pairs), training points."""
        rows = [self._row(s.source, s.round, s.mask, s.k) for s in subnetworks(self.cfg)]
        rows += [self._row("sweep", None, m, k) for m in _sweep_masks(self.cfg) for k in self.cfg.sweep.steps]
        return [r for r in rows if r is not None]

    def _row(self, source: str, rnd: int | None, mid: str, k: int) -> dict[str, Any] | None:
        pairs = self.cfg.stability.pairs
        paths = [path_key(mid, k, p) for p in range(len(pairs))]
        if not all(self.is_done(key) for key in paths):
            return None
        copies = [c for p in range(len(pairs)) for c in self.stage_info(copies_key(mid, k, p))["copies"]]
        sparsity_ = self.stage_info(copies_key(mid, k, 0))["sparsity"]
        split = self.cfg.stability.splits[0]
        barriers = [self.stage_info(key)["barriers"][split] for key in paths]
        err = np.array([b["error"] for b in barriers]) * 100
        loss = np.array([b["loss"] for b in barriers])
        acc = [c["metrics"][split]["accuracy"] * 100 for c in copies]
        info = {} if mid == DENSE else self.stage_info(mask_key(mid))
        spent = info.get("examples", 0)
        imp = mask_id("imp", k, rnd) if rnd else None
        reference = self.stage_info(mask_key(imp))["examples"] if imp and self.is_done(mask_key(imp)) else None
        return {
            "source": source, "round": rnd, "mask": mid, "rewind_step": k, "split": split,
            "sparsity": sparsity_ * 100,
            "accuracy": acc, "accuracy_mean": float(np.mean(acc)),
            "error_barrier": float(err.mean()), "error_barrier_std": float(err.std()),
            "error_barriers": err.tolist(),
            "loss_barrier": float(loss.mean()), "loss_barrier_std": float(loss.std()),
            "training_points": spent,
            "distill_points": info.get("distill_examples", 0),
            "points_ratio": reference / spent if reference and spent else None,  # real IMP's training points / this source's
        }

    def analysis_table(self) -> list[dict[str, Any]]:
        """Return one row per analysed subnetwork and pair: top eigenvalue, trace, and the surface's loss range, where done."""
        rows = []
        for key, stage in analysis_stages(self.cfg).items():
            if not key.startswith("hessian/") or not self.is_done(key):
                continue
            p, info = stage.params, self.stage_info(key)
            row = {"mask": p["mask"], "rewind_step": p["k"], "pair": p["pair"], "lambda_max": (info.get("top_eigenvalues") or [None])[0],
                   "trace": info["trace"], "trace_stderr": info["trace_stderr"], "active": info["active"], "hvps": info["hvps"]}
            skey = surface_key(p["mask"], p["k"], p["pair"])
            if self.is_done(skey):
                surface = self.stage_info(skey)
                row["surface_loss_min"], row["surface_loss_max"] = surface["loss_min"], surface["loss_max"]
            rows.append(row)
        for key, stage in analysis_stages(self.cfg).items():  # surfaces without a Hessian
            p = stage.params
            if key.startswith("surface/") and self.is_done(key) and not any(
                    r["mask"] == p["mask"] and r["rewind_step"] == p["k"] and r["pair"] == p["pair"] for r in rows):
                info = self.stage_info(key)
                rows.append({"mask": p["mask"], "rewind_step": p["k"], "pair": p["pair"], "surface_loss_min": info["loss_min"],
                             "surface_loss_max": info["loss_max"]})
        return rows

    def synthetic_table(self) -> list[dict[str, Any]]:
        """Return one row per synthetic set: method, size, learned lr, real examples used, and its evaluation when done."""
        rows = []
        for name in self.cfg.synthetic.sets:
            if not self.is_done(synthetic_key(name)):
                continue
            row = {"set": name, **self.stage_info(synthetic_key(name))}
            if self.is_done(eval_key(name)):
                row["evaluation"] = {k: v for k, v in self.stage_info(eval_key(name)).items()
                                     if k in ("synthetic", "random_subset", "noise", "random_subset_recipe_lr")}
            rows.append(row)
        return rows
