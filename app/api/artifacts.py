"""Artifacts: the files of run directories, registered under service-generated ids and served by id only.

A stage's files never change once its stage.json exists (lmc_core writes it last), so they are registered
once; run-level files (config.json, stages.json, summary.json) are re-registered as they change.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from lmc_core.foundations import layout
from lmc_core.foundations.layout import RUN_FILES, STAGE_FILE, STAGES_DIR

from .errors import NotFound
from .models import Artifact
from .settings import Settings

KINDS = {".npz": "npz", ".safetensors": "safetensors", ".json": "json", ".png": "png"}
MEDIA = {
    "npz": "application/octet-stream",
    "safetensors": "application/octet-stream",
    "json": "application/json",
    "png": "image/png",
    "other": "application/octet-stream",
}


def run_dir(settings: Settings, run_id: str) -> Path:
    """Return the run directory of `run_id` under the artifact root."""
    return layout.run_dir(settings.runs_dir, run_id)


def _inside(root: Path, path: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
        return True
    except ValueError:
        return False


def stage_dir(settings: Settings, run_id: str, stage: str) -> Path | None:
    """Return the folder of `stage` in the run, or None when the key would lead outside the run directory."""
    root = run_dir(settings, run_id)
    folder = layout.stage_dir(root, stage)
    return folder if stage and _inside(root / STAGES_DIR, folder) else None


def is_done(settings: Settings, run_id: str, stage: str) -> bool:
    """Return True when the stage's stage.json exists (lmc_core writes it last)."""
    folder = stage_dir(settings, run_id, stage)
    return folder is not None and (folder / STAGE_FILE).is_file()


def _register(session: Session, known: dict[tuple[str, str], Artifact], run_id: str, stage: str, path: Path) -> bool:
    size = path.stat().st_size
    row = known.get((stage, path.name))
    if row is not None:
        if row.bytes == size:
            return False
        row.bytes = size
        return True
    row = Artifact(id=uuid.uuid4().hex, run_id=run_id, stage=stage, name=path.name, kind=KINDS.get(path.suffix, "other"), bytes=size)
    session.add(row)
    known[(stage, path.name)] = row
    return True


def scan(session: Session, settings: Settings, run_id: str, stages: Iterable[str]) -> int:
    """Register the files of the run's finished `stages` and its run-level files (not committed); return how many rows changed."""
    root = run_dir(settings, run_id)
    if not root.is_dir():
        return 0
    known = {(a.stage, a.name): a for a in session.scalars(select(Artifact).where(Artifact.run_id == run_id))}
    registered = {stage for stage, _ in known}
    changed = 0
    for name in RUN_FILES:
        if (root / name).is_file():
            changed += _register(session, known, run_id, "", root / name)
    for stage in stages:
        if stage in registered or not is_done(settings, run_id, stage):
            continue
        folder = stage_dir(settings, run_id, stage)
        assert folder is not None  # is_done checked the key
        for path in sorted(folder.iterdir()):
            if path.is_file() and not path.name.startswith("."):  # dot files are lmc_core's half-written temporaries
                changed += _register(session, known, run_id, stage, path)
    return changed


def for_run(session: Session, run_id: str) -> list[Artifact]:
    """Return the run's registered artifacts, run-level files first, then by stage and name."""
    return list(session.scalars(select(Artifact).where(Artifact.run_id == run_id).order_by(Artifact.stage, Artifact.name)))


def find(session: Session, run_id: str, stage: str, name: str) -> Artifact | None:
    """Return the artifact `name` of a stage of the run, if registered."""
    return session.scalar(select(Artifact).where(Artifact.run_id == run_id, Artifact.stage == stage, Artifact.name == name))


def get(session: Session, artifact_id: str) -> Artifact:
    """Return the artifact `artifact_id`; 404 saying where artifact ids are listed otherwise."""
    row = session.get(Artifact, artifact_id)
    if row is None:
        raise NotFound(f"no artifact with id {artifact_id!r}; a study's artifacts are listed by GET /api/studies/{{id}}/artifacts")
    return row


def path_of(settings: Settings, artifact: Artifact) -> Path:
    """Return the file behind `artifact`; 404 when it has vanished from the artifact root."""
    root = run_dir(settings, artifact.run_id)
    path = (layout.stage_dir(root, artifact.stage) / artifact.name) if artifact.stage else root / artifact.name
    if not _inside(root, path) or not path.is_file():
        raise NotFound(
            f"artifact {artifact.id} ({artifact.stage or 'run'}/{artifact.name}) is registered but its file is gone from the artifact root"
        )
    return path


def etag(path: Path) -> str:
    """Return a strong ETag for the file's current content (size and modification time)."""
    st = path.stat()
    return '"' + hashlib.sha256(f"{path}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:32] + '"'
