"""The launch form from the study config's JSON Schema: one field per leaf, values back into a config and dotted overrides.

Scalars (numbers, integers, strings, booleans, enums) get typed inputs; lists, maps and optional sub-objects that are
switched off get a JSON box, so every field of StudyConfig can be edited without the form knowing it by name.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

SCALARS = ("integer", "number", "string", "boolean")


@dataclass
class Field:
    """One form field: dotted path, kind (integer, number, string, boolean, enum, json), value, and what the schema says."""

    path: str
    kind: str
    value: Any
    title: str
    description: str
    options: list[Any] | None = None
    nullable: bool = False
    minimum: float | None = None


def _resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    ref = node.get("$ref")
    if ref and ref.startswith("#/$defs/"):
        return schema["$defs"][ref.split("/")[-1]]
    return node


def _shape(schema: dict[str, Any], node: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """Return (the non-null branch of node, whether null is allowed)."""
    variants = node.get("anyOf")
    if variants:
        rest = [v for v in variants if v.get("type") != "null"]
        nullable = len(rest) < len(variants)
        if len(rest) == 1:
            return _resolve(schema, rest[0]), nullable
        return node, nullable
    return _resolve(schema, node), False


def fields(schema: dict[str, Any], config: dict[str, Any], node: dict[str, Any] | None = None, prefix: str = "") -> list[Field]:
    """Return the form fields of `config` under the schema `node` (the root by default), depth first."""
    node = node or schema
    out: list[Field] = []
    for name, prop in node.get("properties", {}).items():
        path = f"{prefix}{name}"
        shape, nullable = _shape(schema, prop)
        value = config.get(name, prop.get("default"))
        common = dict(title=prop.get("title") or name, description=prop.get("description") or shape.get("description") or "")
        if shape.get("properties") and isinstance(value, dict):
            out.extend(fields(schema, value, shape, path + "."))
        elif "enum" in shape:
            out.append(Field(path, "enum", value, options=list(shape["enum"]), nullable=nullable, **common))
        elif shape.get("type") in SCALARS:
            out.append(
                Field(path, shape["type"], value, nullable=nullable, minimum=shape.get("minimum", shape.get("exclusiveMinimum")), **common)
            )
        else:
            out.append(Field(path, "json", value, nullable=nullable, **common))
    return out


def parse(kind: str, raw: Any) -> Any:
    """Return a form value as the config wants it; raises ValueError with a message for a bad JSON box or number."""
    if kind == "json":
        text = raw if isinstance(raw, str) else json.dumps(raw)
        try:
            return json.loads(text) if text.strip() else None
        except json.JSONDecodeError as err:
            raise ValueError(f"not valid JSON ({err.msg} at character {err.pos})") from None
    if kind == "boolean":
        return bool(raw) if not isinstance(raw, list) else "on" in raw
    if raw is None or raw == "":
        return None
    if kind == "integer":
        if isinstance(raw, float) and not raw.is_integer():
            raise ValueError("a whole number is expected")
        return int(raw)
    if kind == "number":
        return float(raw)
    return raw


def show(kind: str, value: Any) -> Any:
    """Return a config value as its form field holds it."""
    if kind == "json":
        return json.dumps(value)
    if kind == "boolean":
        return ["on"] if value else []
    return value


def nest(values: dict[str, Any]) -> dict[str, Any]:
    """Return {'a.b': 1} as {'a': {'b': 1}}."""
    out: dict[str, Any] = {}
    for path, v in values.items():
        cur = out
        *parents, leaf = path.split(".")
        for p in parents:
            cur = cur.setdefault(p, {})
        cur[leaf] = v
    return out


def flatten(config: Any, prefix: str = "") -> dict[str, Any]:
    """Return a nested config as {dotted path: leaf value} (dicts are walked, everything else is a leaf)."""
    if not isinstance(config, dict) or not config:
        return {prefix.rstrip("."): config} if prefix else {}
    out: dict[str, Any] = {}
    for k, v in config.items():
        out.update(flatten(v, f"{prefix}{k}."))
    return out


def overrides(base: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """Return the dotted paths of `values` whose value differs from the same path in `base` (what the user changed)."""
    flat = flatten(base)
    out = {}
    for path, v in values.items():
        old = flat.get(path, _lookup(base, path))
        if old != v:
            out[path] = v
    return out


def _lookup(config: dict[str, Any], path: str) -> Any:
    cur: Any = config
    for part in path.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return cur


def estimate(config: dict[str, Any]) -> dict[str, Any]:
    """Return a rough size of the work: epochs x rounds x mask sources, and the copy trainings it implies (2 per pair)."""
    train = config.get("train") or {}
    pruning = config.get("pruning") or {}
    sources = [s for s in pruning.get("mask_sources") or [] if s != "dense"]
    rounds = int(pruning.get("rounds") or 0)
    epochs = train.get("epochs") or 0
    pairs = len((config.get("stability") or {}).get("pairs") or [[0, 1]])
    rewinds = len(pruning.get("rewind_steps") or [0])
    trainings = 2 * pairs * rewinds * (1 + rounds * max(1, len(sources)))
    return {
        "epochs": epochs,
        "rounds": rounds,
        "mask_sources": len(sources),
        "pairs": pairs,
        "rewind_steps": rewinds,
        "copy_trainings": trainings,
        "epoch_units": epochs * trainings,
        "synthetic_sets": len((config.get("synthetic") or {}).get("sets") or {}),
    }
