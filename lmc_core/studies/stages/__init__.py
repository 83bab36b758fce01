"""Stage kinds: what each kind of stage computes. One module per group of kinds, one registry line per kind.

A stage kind is a function `(run, stage, out, callback) -> info` that writes its outputs into the
folder `out` and returns the fields of its stage.json (the run adds key, kind, params, seconds and
device, and writes the file last).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lmc_core.foundations.registry import Registry

# (run: Run, stage: Stage, out: Path, callback: Callback) -> info; spelled loosely because the run
# module dispatches through this registry, and naming Run here would make the two import each other.
StageKind = Callable[..., dict[str, Any]]

STAGE_KINDS: Registry[StageKind] = Registry(
    "stage kind",
    {
        "init": "lmc_core.studies.stages.training:run_init",
        "parent": "lmc_core.studies.stages.training:run_parent",
        "copies": "lmc_core.studies.stages.training:run_copies",
        "mask": "lmc_core.studies.stages.masks:run_mask",
        "experts": "lmc_core.studies.stages.synthetic:run_experts",
        "synthetic": "lmc_core.studies.stages.synthetic:run_synthetic",
        "synthetic_eval": "lmc_core.studies.stages.synthetic:run_synthetic_eval",
        "path": "lmc_core.studies.stages.path:run_path",
        "surface": "lmc_core.studies.stages.surface:run_surface",
        "hessian": "lmc_core.studies.stages.hessian:run_hessian",
    },
)
