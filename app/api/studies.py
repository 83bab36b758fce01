"""Studies in the store: create, find, list with filters, tag, archive, note; and their public shape."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Literal, get_args

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session, defer

from lmc_core.foundations.config import StudyConfig

from .errors import NotFound
from .models import Job, Note, Study, StudyTag, User, utcnow

Sort = Literal[
    "created_at",
    "-created_at",
    "updated_at",
    "-updated_at",
    "name",
    "-name",
    "status",
    "-status",
    "final_accuracy",
    "-final_accuracy",
    "largest_barrier",
    "-largest_barrier",
    "sparsity_reached",
    "-sparsity_reached",
]
SORTS = get_args(Sort)
# Key results are None until a round finishes; such studies go last whichever the direction (both backends alike).
NULLS_LAST = ("final_accuracy", "largest_barrier", "sparsity_reached")


def new_id() -> str:
    """Return a fresh study id (uuid4 hex)."""
    return uuid.uuid4().hex


def create(
    session: Session,
    cfg: StudyConfig,
    *,
    preset: str | None,
    owner_id: int | None,
    tags: list[str],
    queue: str | None = None,
    note: str | None = None,
    parent_id: str | None = None,
) -> Study:
    """Return a new queued study for `cfg` on `queue` (None: LMC_QUEUE, filled in by the sync), committed with its tags and first note."""
    study = Study(
        id=new_id(),
        name=cfg.name,
        run_id=cfg.run_id(),
        preset=preset,
        config=cfg.model_dump(mode="json"),
        status="queued",
        archived=False,
        owner_id=owner_id,
        parent_id=parent_id,
        submitted=False,
        queue=queue,
        stages_done=0,
        stages_total=0,
        tags=[StudyTag(name=t) for t in tags],
    )
    session.add(study)
    if note:
        session.flush()  # notes have no relationship to order them after their study
        session.add(Note(study_id=study.id, author_id=owner_id, text=note))
    session.commit()
    return study


def get(session: Session, study_id: str) -> Study:
    """Return the study `study_id`; 404 saying how to find studies when there is none."""
    study = session.get(Study, study_id)
    if study is None:
        raise NotFound(f"no study with id {study_id!r}; list studies with GET /api/studies (filters: status, tag, q, preset, archived)")
    return study


@dataclass(frozen=True)
class Filter:
    """What GET /api/studies narrows by; None means 'any'."""

    status: list[str] | None = None
    tags: list[str] | None = None
    q: str | None = None
    preset: str | None = None
    archived: bool | None = False
    owner: str | None = None
    run_id: str | None = None
    queue: str | None = None
    # Key-result ranges, inclusive; a bound excludes studies without that result yet.
    accuracy_min: float | None = None
    accuracy_max: float | None = None
    barrier_min: float | None = None
    barrier_max: float | None = None
    sparsity_min: float | None = None
    sparsity_max: float | None = None


def _filtered(f: Filter) -> Select[Any]:
    stmt = select(Study)
    if f.status:
        stmt = stmt.where(Study.status.in_(f.status))
    for tag in f.tags or []:  # every listed tag must be present
        stmt = stmt.where(Study.id.in_(select(StudyTag.study_id).where(StudyTag.name == tag)))
    if f.q:
        stmt = stmt.where(Study.name.icontains(f.q, autoescape=True))
    if f.preset is not None:
        stmt = stmt.where(Study.preset == f.preset)
    if f.archived is not None:
        stmt = stmt.where(Study.archived.is_(f.archived))
    if f.owner is not None:
        stmt = stmt.where(Study.owner_id.in_(select(User.id).where(User.name == f.owner)))
    if f.run_id is not None:
        stmt = stmt.where(Study.run_id == f.run_id)
    if f.queue is not None:
        stmt = stmt.where(Study.queue == f.queue)
    for column, low, high in (
        (Study.final_accuracy, f.accuracy_min, f.accuracy_max),
        (Study.largest_barrier, f.barrier_min, f.barrier_max),
        (Study.sparsity_reached, f.sparsity_min, f.sparsity_max),
    ):
        if low is not None:
            stmt = stmt.where(column >= low)
        if high is not None:
            stmt = stmt.where(column <= high)
    return stmt


def page(session: Session, f: Filter, sort: str, limit: int, offset: int) -> tuple[list[Study], int]:
    """Return (one page of studies matching `f` in `sort` order, the number matching over all pages)."""
    stmt = _filtered(f)
    count = session.scalar(select(func.count()).select_from(stmt.order_by(None).subquery())) or 0
    column = getattr(Study, sort.lstrip("-"))
    order = column.desc() if sort.startswith("-") else column.asc()
    if sort.lstrip("-") in NULLS_LAST:
        order = order.nulls_last()
    tie = Study.id.desc() if sort.startswith("-") else Study.id.asc()  # equal keys must not shuffle between pages
    # The list never returns config or progress (kilobytes of JSON per row): do not load or parse them.
    stmt = stmt.options(defer(Study.config), defer(Study.progress))
    rows = session.scalars(stmt.order_by(order, tie).limit(limit).offset(offset)).unique().all()
    return list(rows), count


def set_tags(study: Study, tags: list[str]) -> None:
    """Replace the study's tags (not committed)."""
    keep = {t.name: t for t in study.tags}
    study.tags = [keep.get(t) or StudyTag(name=t) for t in tags]


def notes(session: Session, study_id: str) -> list[Note]:
    """Return the study's notes, oldest first."""
    return list(session.scalars(select(Note).where(Note.study_id == study_id).order_by(Note.created_at, Note.id)))


def add_note(session: Session, study_id: str, author_id: int | None, text: str) -> Note:
    """Return a new note on the study, committed."""
    note = Note(study_id=study_id, author_id=author_id, text=text)
    session.add(note)
    session.commit()
    return note


def jobs(session: Session, study_id: str) -> list[Job]:
    """Return the study's stage jobs in plan order (as first mirrored)."""
    return list(session.scalars(select(Job).where(Job.study_id == study_id).order_by(Job.id)))


def with_run(session: Session, run_id: str) -> list[str]:
    """Return the ids of the studies whose config hashes to `run_id`."""
    return list(session.scalars(select(Study.id).where(Study.run_id == run_id).order_by(Study.created_at)))


def public(study: Study) -> dict[str, Any]:
    """Return the study's fields as StudyOut expects them."""
    return {
        "id": study.id,
        "name": study.name,
        "run_id": study.run_id,
        "preset": study.preset,
        "status": study.status,
        "archived": study.archived,
        "owner": study.owner.name if study.owner else None,
        "parent_id": study.parent_id,
        "submitted": study.submitted,
        "tags": sorted(t.name for t in study.tags),
        "stages_done": study.stages_done,
        "stages_total": study.stages_total,
        "queue": study.queue,
        "final_accuracy": study.final_accuracy,
        "largest_barrier": study.largest_barrier,
        "sparsity_reached": study.sparsity_reached,
        "error": study.error,
        "created_at": study.created_at,
        "updated_at": study.updated_at,
        "started_at": study.started_at,
        "finished_at": study.finished_at,
    }


def detail(study: Study) -> dict[str, Any]:
    """Return the study's fields as StudyDetail expects them (with config and progress)."""
    return {**public(study), "config": study.config, "progress": study.progress}


def touch(study: Study) -> None:
    """Mark the study as changed now (for updated_at sorts)."""
    study.updated_at = utcnow()
