"""Stage kinds: what each kind of stage computes. One module per group of kinds, one registry line per kind.

A kind's `run(run, stage, out, callback) -> info` writes the stage's outputs into the folder `out` and
returns the fields of its stage.json (the run adds key, kind, params, seconds and device, and writes
the file last). An analysis kind also has `plan(cfg, subnetwork, pair) -> Stage | None`, which the
plan calls for every subnetwork and seed pair that `cfg.analysis` selects; the core kinds (init,
parent, mask, copies, path, synthetic sets) are planned by `lmc_core.studies.plan` itself.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lmc_core.foundations.registry import Registry


@dataclass(frozen=True)
class StageKind:
    """A kind of stage: how it runs and, for analyses, when a study plans it.

    Both callables are typed loosely because the run and the plan dispatch through this registry;
    naming their types here would make those modules and this one import each other.
    """

    run: Callable[..., dict[str, Any]]  # (run: Run, stage: Stage, out: Path, callback: Callback) -> info
    plan: Callable[..., Any] | None = None  # (cfg: StudyConfig, subnetwork: Subnetwork, pair: int) -> Stage | None


STAGE_KINDS: Registry[StageKind] = Registry(
    "stage kind",
    {
        "init": "lmc_core.studies.stages.training:INIT",
        "parent": "lmc_core.studies.stages.training:PARENT",
        "copies": "lmc_core.studies.stages.training:COPIES",
        "mask": "lmc_core.studies.stages.masks:MASK",
        "experts": "lmc_core.studies.stages.synthetic:EXPERTS",
        "synthetic": "lmc_core.studies.stages.synthetic:SYNTHETIC",
        "synthetic_eval": "lmc_core.studies.stages.synthetic:SYNTHETIC_EVAL",
        "path": "lmc_core.studies.stages.path:PATH",
        "surface": "lmc_core.studies.stages.surface:SURFACE",
        "hessian": "lmc_core.studies.stages.hessian:HESSIAN",
        "sharpness": "lmc_core.studies.stages.sharpness:SHARPNESS",
        "distances": "lmc_core.studies.stages.distances:DISTANCES",
    },
)

register_stage_kind = STAGE_KINDS.register
