"""Presets and the study config's JSON Schema (what the launch form is generated from)."""

from __future__ import annotations

from functools import cache
from typing import Annotated, Any

from fastapi import APIRouter, Path

from lmc_core.foundations.config import StudyConfig
from lmc_core.studies.presets import PRESETS

from .. import configs
from ..deps import NOT_FOUND, READ_ERRORS, Reader
from ..schemas import PresetOut

router = APIRouter(tags=["presets"], responses=READ_ERRORS)


@cache  # presets are constants; validating them once is enough
def _public(name: str) -> dict[str, Any]:
    cfg = configs.validate(configs.preset_config(name))
    return {"name": name, "description": PRESETS[name]["description"], "run_id": cfg.run_id(), "config": cfg.model_dump(mode="json")}


@router.get("/presets", response_model=list[PresetOut])
def list_presets(_: Reader) -> list[dict[str, Any]]:
    """Return every preset: name, description, run id and full config."""
    return [_public(name) for name in PRESETS]


@router.get("/presets/{name}", response_model=PresetOut, responses=NOT_FOUND)
def get_preset(name: Annotated[str, Path(max_length=64)], _: Reader) -> dict[str, Any]:
    """Return one preset (404 listing the preset names)."""
    return _public(name)


@router.get("/schema/study", responses={200: {"description": "JSON Schema of StudyConfig"}})
def study_schema(_: Reader) -> dict[str, Any]:
    """Return the JSON Schema of a study config (every field with its type, default and description)."""
    return StudyConfig.model_json_schema()
