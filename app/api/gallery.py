"""The gallery: published results and figures with a title, tags and notes; stars; permalink ids."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from . import thumbnails
from .errors import FieldErrors, NotFound
from .models import GalleryEntry, GalleryStar, GalleryTag, GalleryThumbnail, Job, Result, Study, User, utcnow
from .schemas import GalleryCreate, GalleryUpdate
from .thumbnails import Png

# Surface and Hessian figures show one stage; the others summarise the whole study.
STAGE_FIGURES = {"surface": "surface/", "hessian": "hessian/"}
SORTS = ("-created_at", "created_at", "-stars", "title")


def new_id() -> str:
    """Return a fresh permalink id (10 url-safe characters)."""
    return secrets.token_urlsafe(8)[:10]


def _known_stages(session: Session, study: Study) -> set[str]:
    result = session.get(Result, study.id)
    keys = set(result.stages) if result and result.stages else set()
    return keys | set(session.scalars(select(Job.key).where(Job.study_id == study.id)))


def _check_figure(session: Session, study: Study, body: GalleryCreate) -> None:
    errors = []
    if body.kind == "figure" and body.figure is None:
        errors.append(
            {"loc": "figure", "msg": "a figure entry names its figure: interpolation, sparsity, surface or hessian", "type": "missing"}
        )
    if body.kind == "result" and (body.figure is not None or body.stage is not None):
        errors.append(
            {
                "loc": "kind",
                "msg": "a result entry publishes the study's tables; use kind 'figure' to publish a figure",
                "type": "value_error",
            }
        )
    prefix = STAGE_FIGURES.get(body.figure or "")
    if body.stage is not None and prefix is None:
        errors.append(
            {
                "loc": "stage",
                "msg": f"only surface and hessian figures show one stage; {body.figure} figures cover the study",
                "type": "value_error",
            }
        )
    elif body.stage is not None and prefix is not None:
        if not body.stage.startswith(prefix):
            errors.append(
                {"loc": "stage", "msg": f"a {body.figure} figure shows a stage whose key starts with {prefix!r}", "type": "value_error"}
            )
        else:
            known = _known_stages(session, study)
            if known and body.stage not in known:
                choices = sorted(k for k in known if k.startswith(prefix))
                errors.append(
                    {
                        "loc": "stage",
                        "msg": f"study {study.id} has no stage {body.stage!r}; its {body.figure} stages: {', '.join(choices) or 'none'}",
                        "type": "value_error",
                    }
                )
    if errors:
        raise FieldErrors(errors, "cannot publish: " + "; ".join(f"{e['loc']}: {e['msg']}" for e in errors))


def publish(session: Session, study: Study, body: GalleryCreate, author_id: int | None, thumbnail: Png | None = None) -> GalleryEntry:
    """Return a new gallery entry for `study` (with its checked PNG thumbnail, if any), committed in one transaction;
    422 naming the bad field when figure and stage do not fit."""
    _check_figure(session, study, body)
    entry = GalleryEntry(
        id=new_id(),
        study_id=study.id,
        kind=body.kind,
        figure=body.figure,
        stage=body.stage,
        title=body.title,
        notes=body.notes,
        author_id=author_id,
        tags=[GalleryTag(name=t) for t in body.tags],
    )
    session.add(entry)
    if thumbnail is not None:
        session.flush()  # the thumbnail row refers to the entry
        session.add(
            GalleryThumbnail(
                entry_id=entry.id,
                png=thumbnail.data,
                width=thumbnail.width,
                height=thumbnail.height,
                bytes=len(thumbnail.data),
                sha256=thumbnail.sha256,
            )
        )
    session.commit()
    return entry


def get(session: Session, entry_id: str) -> GalleryEntry:
    """Return the gallery entry `entry_id`; 404 saying how to list entries otherwise."""
    entry = session.get(GalleryEntry, entry_id)
    if entry is None:
        raise NotFound(f"no gallery entry {entry_id!r}; list entries with GET /api/gallery")
    return entry


def update(session: Session, entry: GalleryEntry, body: GalleryUpdate) -> GalleryEntry:
    """Return the entry with the given title, tags or notes replaced, committed."""
    if body.title is not None:
        entry.title = body.title
    if body.notes is not None:
        entry.notes = body.notes
    if body.tags is not None:
        keep = {t.name: t for t in entry.tags}
        entry.tags = [keep.get(t) or GalleryTag(name=t) for t in body.tags]
    entry.updated_at = utcnow()
    session.commit()
    return entry


def star(session: Session, entry: GalleryEntry, user_id: int, on: bool) -> None:
    """Star (or unstar) the entry for the user, committed; starring twice is a no-op."""
    row = session.get(GalleryStar, (entry.id, user_id))
    if on and row is None:
        session.add(GalleryStar(entry_id=entry.id, user_id=user_id))
    elif not on and row is not None:
        session.delete(row)
    session.commit()


@dataclass(frozen=True)
class Filter:
    """What GET /api/gallery narrows by."""

    tags: list[str] | None = None
    study_id: str | None = None
    kind: str | None = None
    figure: str | None = None
    q: str | None = None
    author: str | None = None
    starred_by: int | None = None


def _stars() -> Any:
    return select(func.count()).where(GalleryStar.entry_id == GalleryEntry.id).correlate(GalleryEntry).scalar_subquery()


def _filtered(f: Filter) -> Select[Any]:
    stmt = select(GalleryEntry)
    for tag in f.tags or []:
        stmt = stmt.where(GalleryEntry.id.in_(select(GalleryTag.entry_id).where(GalleryTag.name == tag)))
    if f.study_id is not None:
        stmt = stmt.where(GalleryEntry.study_id == f.study_id)
    if f.kind is not None:
        stmt = stmt.where(GalleryEntry.kind == f.kind)
    if f.figure is not None:
        stmt = stmt.where(GalleryEntry.figure == f.figure)
    if f.q:
        stmt = stmt.where(GalleryEntry.title.icontains(f.q, autoescape=True) | GalleryEntry.notes.icontains(f.q, autoescape=True))
    if f.author is not None:
        stmt = stmt.where(GalleryEntry.author_id.in_(select(User.id).where(User.name == f.author)))
    if f.starred_by is not None:
        stmt = stmt.where(GalleryEntry.id.in_(select(GalleryStar.entry_id).where(GalleryStar.user_id == f.starred_by)))
    return stmt


def page(session: Session, f: Filter, sort: str, limit: int, offset: int) -> tuple[list[GalleryEntry], int]:
    """Return (one page of entries matching `f` in `sort` order, the number matching over all pages)."""
    stmt = _filtered(f)
    count = session.scalar(select(func.count()).select_from(stmt.order_by(None).subquery())) or 0
    order = {
        "-created_at": (GalleryEntry.created_at.desc(), GalleryEntry.id.desc()),
        "created_at": (GalleryEntry.created_at.asc(), GalleryEntry.id.asc()),
        "-stars": (_stars().desc(), GalleryEntry.created_at.desc(), GalleryEntry.id.desc()),
        "title": (GalleryEntry.title.asc(), GalleryEntry.id.asc()),
    }[sort]
    rows = session.scalars(stmt.order_by(*order).limit(limit).offset(offset)).unique().all()
    return list(rows), count


def public(session: Session, entries: list[GalleryEntry], viewer_id: int | None) -> list[dict[str, Any]]:
    """Return the entries as GalleryOut expects them, with star counts, whether `viewer_id` starred each, and their thumbnails."""
    ids = [e.id for e in entries]
    counts: dict[str, int] = {}
    mine: set[str] = set()
    if ids:
        counts = dict(
            session.execute(
                select(GalleryStar.entry_id, func.count()).where(GalleryStar.entry_id.in_(ids)).group_by(GalleryStar.entry_id)
            ).all()
        )
        if viewer_id is not None:
            mine = set(session.scalars(select(GalleryStar.entry_id).where(GalleryStar.entry_id.in_(ids), GalleryStar.user_id == viewer_id)))
    pictures = thumbnails.meta(session, ids)
    return [
        {
            "id": e.id,
            "study_id": e.study_id,
            "study_name": e.study.name,
            "kind": e.kind,
            "figure": e.figure,
            "stage": e.stage,
            "title": e.title,
            "notes": e.notes,
            "tags": sorted(t.name for t in e.tags),
            "author": e.author.name if e.author else None,
            "stars": counts.get(e.id, 0),
            "starred": e.id in mine,
            "permalink": f"/api/gallery/{e.id}",
            "thumbnail": pictures.get(e.id),
            "created_at": e.created_at,
            "updated_at": e.updated_at,
        }
        for e in entries
    ]
