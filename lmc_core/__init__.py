"""lmc_core: the science of LMC Lab, usable from a notebook with no server.

The names below are the public API; each loads its sub-package on first use, so `import lmc_core`
stays instant and torch-free (the API process reads `__version__` through it).

    from lmc_core import Run, preset
    rows = Run(preset("smoke"), root="runs").run()
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from lmc_core.foundations.version import __version__

if TYPE_CHECKING:
    from lmc_core.connectivity.path import PathResult, evaluate_path
    from lmc_core.data.dataset import Dataset, load_dataset
    from lmc_core.data.registry import available_datasets
    from lmc_core.foundations.config import StudyConfig
    from lmc_core.hessian.density import slq_density
    from lmc_core.hessian.diagonal import exact_diagonal, hutchinson_diagonal
    from lmc_core.hessian.eigen import lanczos
    from lmc_core.hessian.operator import HessianOperator
    from lmc_core.hessian.trace import trace
    from lmc_core.landscape.grid import grid_axis
    from lmc_core.landscape.plane import plane_through, random_plane
    from lmc_core.landscape.surface import Surface, SurfaceOptions, evaluate_surface
    from lmc_core.models import build_model
    from lmc_core.studies.presets import PRESETS, preset
    from lmc_core.studies.run import Run
    from lmc_core.studies.validation import load_config, validate_config

_EXPORTS = {
    "Run": "lmc_core.studies.run",
    "preset": "lmc_core.studies.presets",
    "PRESETS": "lmc_core.studies.presets",
    "load_config": "lmc_core.studies.validation",
    "validate_config": "lmc_core.studies.validation",
    "StudyConfig": "lmc_core.foundations.config",
    "Dataset": "lmc_core.data.dataset",
    "load_dataset": "lmc_core.data.dataset",
    "available_datasets": "lmc_core.data.registry",
    "build_model": "lmc_core.models",
    "evaluate_path": "lmc_core.connectivity.path",
    "PathResult": "lmc_core.connectivity.path",
    "random_plane": "lmc_core.landscape.plane",
    "plane_through": "lmc_core.landscape.plane",
    "grid_axis": "lmc_core.landscape.grid",
    "evaluate_surface": "lmc_core.landscape.surface",
    "Surface": "lmc_core.landscape.surface",
    "SurfaceOptions": "lmc_core.landscape.surface",
    "HessianOperator": "lmc_core.hessian.operator",
    "lanczos": "lmc_core.hessian.eigen",
    "trace": "lmc_core.hessian.trace",
    "exact_diagonal": "lmc_core.hessian.diagonal",
    "hutchinson_diagonal": "lmc_core.hessian.diagonal",
    "slq_density": "lmc_core.hessian.density",
}

__all__ = [  # noqa: RUF022 (grouped as _EXPORTS, by layer)
    "__version__",
    "Run",
    "preset",
    "PRESETS",
    "load_config",
    "validate_config",
    "StudyConfig",
    "Dataset",
    "load_dataset",
    "available_datasets",
    "build_model",
    "evaluate_path",
    "PathResult",
    "random_plane",
    "plane_through",
    "grid_axis",
    "evaluate_surface",
    "Surface",
    "SurfaceOptions",
    "HessianOperator",
    "lanczos",
    "trace",
    "exact_diagonal",
    "hutchinson_diagonal",
    "slq_density",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'lmc_core' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
