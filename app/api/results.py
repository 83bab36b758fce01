"""Results of a study: the summary tables mirrored from summary.json, and the stage files (npz, stage.json) behind figures."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from lmc_core.foundations.layout import STAGE_FILE, SUMMARY_FILE

from . import artifacts, key_results
from .errors import NotFound
from .figures import stage_ref, with_mask_refs
from .jsonsafe import jsonsafe
from .models import Artifact, Result, Study, utcnow
from .settings import Settings


def read_summary(settings: Settings, run_id: str) -> dict[str, Any] | None:
    """Return the run's summary.json (written by the worker after every stage), or None while there is none."""
    path = artifacts.run_dir(settings, run_id) / SUMMARY_FILE
    try:
        return jsonsafe(json.loads(path.read_text()))
    except (OSError, ValueError):
        return None


def store_summary(session: Session, study: Study, summary: dict[str, Any]) -> bool:
    """Upsert the study's results row from `summary` and its key-result columns (not committed); return True when something changed."""
    fields: dict[str, Any] = {
        key: summary.get(key) or ([] if key != "stages" else {}) for key in ("table", "analysis", "synthetic", "stages")
    }
    changed = key_results.apply(study, fields["table"])
    row = session.get(Result, study.id)
    if row is None:
        session.add(Result(study_id=study.id, run_id=study.run_id, **fields))
        return True
    if all(getattr(row, k) == v for k, v in fields.items()):
        return changed
    for key, value in fields.items():
        setattr(row, key, value)
    row.updated_at = utcnow()
    return True


def public(session: Session, study: Study) -> dict[str, Any]:
    """Return the study's results as ResultsOut expects them (empty tables while nothing is finished); the rows of the
    study and analysis tables carry `mask_ref`, the reading of their mask id."""
    row = session.get(Result, study.id)
    return {
        "study_id": study.id,
        "run_id": study.run_id,
        "status": study.status,
        "available": row is not None,
        "table": with_mask_refs(row.table) if row else [],
        "analysis": with_mask_refs(row.analysis) if row else [],
        "synthetic": row.synthetic if row else [],
        "stages": row.stages if row else {},
        "updated_at": row.updated_at if row else None,
    }


def distances(session: Session, settings: Settings, study: Study) -> list[dict[str, Any]]:
    """Return the rows of the study's finished distances stages (Hamming distances between masks), by rewind step and round.

    They are read from the stages' stage.json (a few small files), so the store needs no table of its own for them.
    """
    refs = [ref for ref in map(stage_ref, stages_with(session, study.run_id, STAGE_FILE)) if ref and ref["kind"] == "distances"]
    rows: list[dict[str, Any]] = []
    for ref in sorted(refs, key=lambda r: (r["k"], r["round"])):
        row = artifacts.find(session, study.run_id, ref["key"], STAGE_FILE)
        try:
            info = json.loads(artifacts.path_of(settings, row).read_text()) if row is not None else {}
        except (NotFound, OSError, ValueError):
            continue  # a file gone from the artifact root or mid-write: its rows come back on the next request
        rows.extend(jsonsafe(info.get("rows") or []))
    return rows


def stages_with(session: Session, run_id: str, name: str) -> list[str]:
    """Return the run's stages that hold a file called `name` (e.g. path.npz), in key order."""
    return list(session.scalars(select(Artifact.stage).where(Artifact.run_id == run_id, Artifact.name == name).order_by(Artifact.stage)))


def stage_file(session: Session, settings: Settings, study: Study, stage: str | None, name: str) -> tuple[str, Path]:
    """Return (stage key, path) of file `name` of a finished stage (the first such stage when `stage` is None); 404 naming the choices."""
    available = stages_with(session, study.run_id, name)
    if stage is None:
        if not available:
            raise NotFound(f"study {study.id} has no finished stage with {name} yet (status: {study.status})")
        stage = available[0]
    row = artifacts.find(session, study.run_id, stage, name)
    if row is None:
        choices = ", ".join(available) if available else "none yet"
        raise NotFound(f"study {study.id} has no {name} for stage {stage!r}; stages with {name}: {choices}", available=available)
    return stage, artifacts.path_of(settings, row)


def load_arrays(path: Path) -> dict[str, np.ndarray]:
    """Return the arrays of an npz file, refusing pickled objects."""
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def stage_info(session: Session, settings: Settings, study: Study, stage: str) -> dict[str, Any]:
    """Return the stage.json of a finished stage of the study (404 naming the finished stages otherwise)."""
    _, path = stage_file(session, settings, study, stage, STAGE_FILE)
    return jsonsafe(json.loads(path.read_text()))
