"""Validation of a study config against every registry (datasets, mask sources), on top of the config's own checks.

The config model (`lmc_core.foundations.config`) is pure data: it checks types, ranges and how fields
relate, and knows no registry. This module adds what depends on what is registered, so that the API,
the CLI and the worker reject an unknown dataset or mask source the same way, before any work starts.
Torch-free: the API validates with it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError

from lmc_core.data.registry import DATASETS
from lmc_core.foundations.config import StudyConfig
from lmc_core.prune.sources import get_mask_source


def registry_problems(cfg: StudyConfig) -> list[tuple[tuple[str | int, ...], str, Any]]:
    """Return (location, message, value) for every name in `cfg` that no registry knows or that cannot run under `cfg`."""
    problems: list[tuple[tuple[str | int, ...], str, Any]] = []
    if cfg.data.name not in DATASETS:
        problems.append(
            (("data", "name"), f"unknown dataset {cfg.data.name!r}; available datasets: {', '.join(DATASETS.names())}", cfg.data.name)
        )
    for name in cfg.pruning.mask_sources:
        loc: tuple[str | int, ...] = ("pruning", "mask_sources")
        try:
            source = get_mask_source(name)  # a ValueError names the registered sources and their syntax
        except ValueError as e:
            problems.append((loc, str(e), name))
            continue
        problem = source.problem(cfg)
        if problem:
            problems.append((loc, f"pruning.mask_sources: {name}: {problem}", name))
    return problems


def validate_config(source: dict[str, Any] | StudyConfig) -> StudyConfig:
    """Return the StudyConfig `source` describes, checked against every registry; a pydantic ValidationError otherwise.

    Registry problems are reported as ValidationErrors too, with the location of the offending field,
    so that every caller shows one kind of error.
    """
    cfg = source if isinstance(source, StudyConfig) else StudyConfig.model_validate(source)
    problems = registry_problems(cfg)
    if problems:
        details = [
            InitErrorDetails(type=PydanticCustomError("value_error", "Value error, {message}", {"message": message}), loc=loc, input=value)
            for loc, message, value in problems
        ]
        raise ValidationError.from_exception_data(StudyConfig.__name__, details)
    return cfg


def load_config(source: str | Path | dict[str, Any]) -> StudyConfig:
    """Return a validated StudyConfig from a dict or a path to a JSON or YAML file."""
    if isinstance(source, dict):
        return validate_config(source)
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path} (give a .json or .yaml study config, or --preset NAME)")
    if path.suffix not in {".yaml", ".yml", ".json"}:
        raise ValueError(f"{path}: a study config is a .json or .yaml file, got {path.suffix or 'no extension'!r}")
    text = path.read_text()
    import yaml  # only file configs need it

    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as e:  # both say where in the file; add which file
        raise ValueError(f"{path}: not valid {path.suffix[1:].upper()}: {e}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a study config must be a mapping of fields, got {type(data).__name__}")
    return validate_config(data)
