"""The plan: a study config becomes a graph of stages, each a pure function of the config and its dependencies.

Stage keys and what each names are defined in `lmc_core.foundations.layout`. Only what something depends
on is planned, and stages are shared wherever the config allows, which is what lets the worker run
independent stages on different machines.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lmc_core.distill.experts import experts_hash
from lmc_core.foundations.config import StudyConfig
from lmc_core.foundations.layout import (
    DENSE,
    copies_key,
    distances_key,
    eval_key,
    experts_key,
    mask_id,
    mask_key,
    path_key,
    rewind_key,
    synthetic_key,
)
from lmc_core.prune.sources import get_mask_source
from lmc_core.studies.stages import STAGE_KINDS


@dataclass(frozen=True)
class Stage:
    """One node of the plan: its key, its kind (a name in the stage-kind registry), dependencies and parameters."""

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
    return [
        Subnetwork(source, r, mask_id(source, k, r), k)
        for k in cfg.pruning.rewind_steps
        for source in cfg.pruning.mask_sources
        for r in get_mask_source(source).rounds(cfg)
    ]


def experts_stage_key(cfg: StudyConfig, set_name: str) -> str:
    """Return the key of the MTT experts a set distils from; sets with equal expert settings share it."""
    d = cfg.synthetic.sets[set_name]
    return experts_key(experts_hash(cfg.data, d.model or cfg.model, d.mtt, d.dsa, cfg.seed))


def sweep_masks(cfg: StudyConfig) -> list[str]:
    """Return the masks of the rewind-step sweep (none when the sweep is off); a mask the study does not make is an error."""
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
            deps = (experts_stage_key(cfg, name),)
            stages.setdefault(deps[0], Stage(deps[0], "experts", (), {"set": name}))
        stages[synthetic_key(name)] = Stage(synthetic_key(name), "synthetic", deps, {"set": name})
        if cfg.synthetic.evaluate_runs:
            stages[eval_key(name)] = Stage(eval_key(name), "synthetic_eval", (synthetic_key(name),), {"set": name})
    pairs = cfg.stability.pairs
    points: list[tuple[str, int]] = [(s.mask, s.k) for s in subnetworks(cfg)]
    points += [(m, k) for m in sweep_masks(cfg) for k in cfg.sweep.steps]
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
    stages.update(distance_stages(cfg))
    _add_dependencies(cfg, stages)
    return _topological(stages)


def analysis_stages(cfg: StudyConfig) -> dict[str, Stage]:
    """Return the analysis stages (surfaces, Hessians, any registered analysis kind) of the subnetworks `cfg.analysis` selects."""
    a = cfg.analysis
    planners = [kind.plan for _, kind in STAGE_KINDS.in_order() if kind.plan is not None]
    out: dict[str, Stage] = {}
    for s in subnetworks(cfg):
        if (a.rounds is not None and s.round not in a.rounds) or (a.mask_sources is not None and s.source not in a.mask_sources):
            continue
        for p in a.pairs:
            for planner in planners:
                stage = planner(cfg, s, p)
                if stage is not None:
                    out.setdefault(stage.key, stage)
    return out


def distance_stages(cfg: StudyConfig) -> dict[str, Stage]:
    """Return a stage per rewind step k and tested round r >= 1 that two or more mask sources reach, comparing their masks.

    Cheap (it loads masks the tested subnetworks need anyway), so every study that can have one plans it.
    """
    by_point: dict[tuple[int, int], list[Subnetwork]] = {}
    for s in subnetworks(cfg):
        if s.round > 0:
            by_point.setdefault((s.k, s.round), []).append(s)
    out = {}
    for (k, r), subs in by_point.items():
        if len(subs) > 1:
            key = distances_key(k, r)
            masks = {s.source: s.mask for s in subs}
            out[key] = Stage(key, "distances", tuple(mask_key(m) for m in masks.values()), {"k": k, "round": r, "masks": masks})
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
            deps = tuple(get_mask_source(s.source).dependencies(cfg, s.k, s.round))
            stages[key] = Stage(key, "mask", deps, {"source": s.source, "k": s.k, "round": s.round})
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
            raise ValueError(f"stage cycle: {' -> '.join((*trail, key))}")
        if key not in stages:
            raise ValueError(f"stage {trail[-1]} depends on {key}, which the study does not plan")
        for dep in stages[key].deps:
            visit(dep, (*trail, key))
        done.add(key)
        order.append(stages[key])

    for key in stages:
        visit(key, ())
    return order
