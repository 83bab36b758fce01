"""Study configs from requests: a preset or a (partial) config, dotted-key overrides, validated by lmc_core's StudyConfig."""

from __future__ import annotations

import copy
import math
from typing import Any

from pydantic import ValidationError

from lmc_core.foundations.config import StudyConfig
from lmc_core.studies.presets import PRESETS, merge
from lmc_core.studies.validation import validate_config

from .errors import FieldErrors, NotFound

NAME_CHARS = 200  # studies.name


def preset_config(name: str) -> dict[str, Any]:
    """Return a copy of preset `name`'s raw config; 404 naming the presets when there is no such preset."""
    if name not in PRESETS:
        raise NotFound(f"unknown preset {name!r}; available presets: {', '.join(PRESETS)}", available=list(PRESETS))
    return copy.deepcopy(PRESETS[name]["config"])


def apply_overrides(raw: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Return `raw` with each dotted key of `overrides` (e.g. "train.epochs") set to its value; dict values merge."""
    out = copy.deepcopy(raw)
    errors = []
    for key, value in overrides.items():
        parts = key.split(".")
        if not all(parts):
            errors.append({"loc": key, "msg": "an override key is a dotted field path such as 'train.epochs'", "type": "override"})
            continue
        node = out
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                errors.append(
                    {"loc": ".".join(parts[: i + 1]), "msg": f"is not a group of fields, so {key!r} cannot be set", "type": "override"}
                )
                break
            node = child
        else:
            last = parts[-1]
            node[last] = merge(node[last], value) if isinstance(value, dict) and isinstance(node.get(last), dict) else value
    if errors:
        raise FieldErrors(errors, "invalid overrides: " + "; ".join(f"{e['loc']}: {e['msg']}" for e in errors))
    return out


def _unstorable(value: Any, loc: str) -> list[dict[str, Any]]:
    """Return an error per value strict JSON and PostgreSQL cannot hold: NaN or infinite numbers, NUL characters."""
    if isinstance(value, float) and not math.isfinite(value):
        return [{"loc": loc, "msg": f"must be a finite number, got {value}", "type": "finite_number"}]
    if isinstance(value, str) and "\x00" in value:
        return [{"loc": loc, "msg": "must not contain NUL characters", "type": "string_nul"}]
    if isinstance(value, dict):
        return [e for k, v in value.items() for e in _unstorable(v, f"{loc}.{k}" if loc else str(k))]
    if isinstance(value, list):
        return [e for i, v in enumerate(value) for e in _unstorable(v, f"{loc}.{i}")]
    return []


def validate(raw: dict[str, Any]) -> StudyConfig:
    """Return the StudyConfig `raw` describes; 422 with one dotted path per bad field otherwise."""
    try:
        cfg = validate_config(raw)
    except ValidationError as err:
        errors = [{"loc": ".".join(str(p) for p in e["loc"]), "msg": e["msg"], "type": e["type"]} for e in err.errors()]
        raise FieldErrors(errors) from None
    # Python's JSON parser accepts NaN and Infinity and pydantic floats allow them; the store and the queue must not get them.
    errors = _unstorable(cfg.model_dump(mode="python"), "")
    if len(cfg.name) > NAME_CHARS:
        errors.append({"loc": "name", "msg": f"at most {NAME_CHARS} characters", "type": "string_too_long"})
    if errors:
        raise FieldErrors(errors)
    return cfg


def build(preset: str | None, config: dict[str, Any] | None, overrides: dict[str, Any] | None, name: str | None) -> StudyConfig:
    """Return the validated config of a request: a preset or a partial config, then overrides, then the name."""
    if preset is not None and config is not None:
        raise FieldErrors(
            [
                {
                    "loc": "preset",
                    "msg": "give either a preset name or a config, not both (use overrides to change a preset)",
                    "type": "exclusive",
                }
            ],
            "give either a preset name or a config, not both",
        )
    raw = preset_config(preset) if preset is not None else copy.deepcopy(config or {})
    raw = apply_overrides(raw, overrides or {})
    if name is not None:
        raw["name"] = name
    return validate(raw)


def derive(base: dict[str, Any], config: dict[str, Any] | None, overrides: dict[str, Any] | None, name: str | None) -> StudyConfig:
    """Return a clone's config: `base` with a partial `config` merged in, then dotted overrides, then the name."""
    raw = merge(copy.deepcopy(base), config or {})
    raw = apply_overrides(raw, overrides or {})
    if name is not None:
        raw["name"] = name
    return validate(raw)
