"""Studies: create (from a preset or a config, on a chosen queue), validate, list, get, clone, cancel, retry, archive, tag, note;
jobs and live progress."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated, Literal

import anyio
from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.sse import EventSourceResponse, ServerSentEvent

from .. import configs, limits, progress, queues, studies, submission
from ..deps import (
    BODY_ERRORS,
    CONFLICT,
    NOT_FOUND,
    QUEUE_DOWN,
    READ_ERRORS,
    TOO_MANY,
    WRITE_ERRORS,
    Editor,
    Reader,
    RedisDep,
    SessionDep,
    SettingsDep,
    json_errors,
)
from ..errors import Conflict
from ..models import Study, utcnow
from ..schemas import (
    CancelOut,
    JobOut,
    NoteCreate,
    NoteOut,
    ProgressOut,
    StudiesPage,
    StudyClone,
    StudyCreate,
    StudyDetail,
    StudyOut,
    StudyRetry,
    StudyUpdate,
    ValidationOut,
)

router = APIRouter(prefix="/studies", tags=["studies"], responses=READ_ERRORS)
StudyId = Annotated[str, Path(min_length=1, max_length=64, description="A study id (GET /api/studies lists them).")]
STREAM_INTERVAL_S = 1.0  # between looks at the store; the sync task refreshes it about as often


def existing(study_id: StudyId, session: SessionDep, _: Reader) -> Study:
    """Return the study named in the path (404 otherwise), after checking the caller may read."""
    return studies.get(session, study_id)


StudyDep = Annotated[Study, Depends(existing)]


@router.post("", status_code=201, response_model=StudyDetail, responses={**WRITE_ERRORS, **NOT_FOUND, **TOO_MANY, **QUEUE_DOWN})
def create_study(body: StudyCreate, session: SessionDep, conn: RedisDep, settings: SettingsDep, user: Editor) -> dict:
    """Create a study from a preset or a config (plus dotted overrides) and queue it on `queue` (default LMC_QUEUE);
    503 if Redis is down (the study stays queued)."""
    queue = queues.choose(settings, body.queue)
    cfg = configs.build(body.preset, body.config, body.overrides, body.name)
    limits.check_config(cfg, settings)
    limits.check_active_studies(session, user.user_id, settings)
    study = studies.create(session, cfg, preset=body.preset, owner_id=user.user_id, tags=body.tags, note=body.note, queue=queue)
    submission.submit(session, conn, study, settings)
    return studies.detail(study)


@router.post("/validate", response_model=ValidationOut, responses={**BODY_ERRORS, **NOT_FOUND})
def validate_study(body: StudyCreate, session: SessionDep, settings: SettingsDep, _: Reader) -> dict:
    """Validate a study without creating it: the full config with defaults, its run id, and studies that already share it."""
    cfg = configs.build(body.preset, body.config, body.overrides, body.name)
    limits.check_config(cfg, settings)
    return {
        "valid": True,
        "run_id": cfg.run_id(),
        "name": cfg.name,
        "config": cfg.model_dump(mode="json"),
        "existing": studies.with_run(session, cfg.run_id()),
    }


@router.get("", response_model=StudiesPage)
def list_studies(
    session: SessionDep,
    _: Reader,
    status: Annotated[
        list[Literal["queued", "running", "finished", "failed", "cancelled"]] | None, Query(description="Any of these states.")
    ] = None,
    tag: Annotated[list[str] | None, Query(description="Studies carrying every one of these tags.")] = None,
    q: Annotated[str | None, Query(max_length=200, description="Case-insensitive substring of the name.")] = None,
    preset: Annotated[str | None, Query(max_length=64)] = None,
    owner: Annotated[str | None, Query(max_length=64, description="User name of the study's creator.")] = None,
    run_id: Annotated[str | None, Query(max_length=32)] = None,
    queue: Annotated[str | None, Query(max_length=64, description="Studies submitted to this queue.")] = None,
    accuracy_min: Annotated[float | None, Query(ge=0, le=100, description="final_accuracy at least this (%).")] = None,
    accuracy_max: Annotated[float | None, Query(ge=0, le=100, description="final_accuracy at most this (%).")] = None,
    barrier_min: Annotated[float | None, Query(ge=-100, le=100, description="largest_barrier at least this (points).")] = None,
    barrier_max: Annotated[float | None, Query(ge=-100, le=100, description="largest_barrier at most this (points).")] = None,
    sparsity_min: Annotated[float | None, Query(ge=0, le=100, description="sparsity_reached at least this (%).")] = None,
    sparsity_max: Annotated[float | None, Query(ge=0, le=100, description="sparsity_reached at most this (%).")] = None,
    archived: Annotated[
        Literal["false", "true", "any"], Query(description="Hide archived studies (false), show only them (true), or both.")
    ] = "false",
    sort: Annotated[studies.Sort, Query(description="Field to sort by; a leading '-' sorts descending.")] = "-created_at",
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> dict:
    """List studies, filtered, sorted and paginated ({data, count, limit, offset}); key results (final accuracy, largest barrier,
    sparsity reached) sort with studies lacking them last, and their *_min / *_max bounds leave those out."""
    f = studies.Filter(
        status=list(status) if status else None,
        tags=tag,
        q=q,
        preset=preset,
        owner=owner,
        run_id=run_id,
        queue=queue,
        archived=None if archived == "any" else archived == "true",
        accuracy_min=accuracy_min,
        accuracy_max=accuracy_max,
        barrier_min=barrier_min,
        barrier_max=barrier_max,
        sparsity_min=sparsity_min,
        sparsity_max=sparsity_max,
    )
    rows, count = studies.page(session, f, sort, limit, offset)
    return {"data": [studies.public(s) for s in rows], "count": count, "limit": limit, "offset": offset}


@router.get("/{study_id}", response_model=StudyDetail, responses=NOT_FOUND)
def get_study(study: StudyDep) -> dict:
    """Return one study with its config and mirrored progress."""
    return studies.detail(study)


@router.patch("/{study_id}", response_model=StudyDetail, responses={**WRITE_ERRORS, **NOT_FOUND})
def update_study(study_id: StudyId, body: StudyUpdate, session: SessionDep, _: Editor) -> dict:
    """Rename, retag, archive or unarchive a study (the config never changes: clone to change it)."""
    study = studies.get(session, study_id)
    if body.name is not None:
        study.name = body.name
    if body.tags is not None:
        studies.set_tags(study, body.tags)
    if body.archived is not None:
        study.archived = body.archived
    studies.touch(study)
    session.commit()
    return studies.detail(study)


def _archive(session: SessionDep, study_id: str, archived: bool) -> dict:
    study = studies.get(session, study_id)
    study.archived = archived
    studies.touch(study)
    session.commit()
    return studies.public(study)


@router.post("/{study_id}/archive", response_model=StudyOut, responses={**WRITE_ERRORS, **NOT_FOUND})
def archive_study(study_id: StudyId, session: SessionDep, _: Editor) -> dict:
    """Archive a study: hidden from lists unless asked for (archived=true|any); nothing is deleted."""
    return _archive(session, study_id, True)


@router.post("/{study_id}/unarchive", response_model=StudyOut, responses={**WRITE_ERRORS, **NOT_FOUND})
def unarchive_study(study_id: StudyId, session: SessionDep, _: Editor) -> dict:
    """Bring an archived study back into the default lists."""
    return _archive(session, study_id, False)


@router.post(
    "/{study_id}/clone", status_code=201, response_model=StudyDetail, responses={**WRITE_ERRORS, **NOT_FOUND, **TOO_MANY, **QUEUE_DOWN}
)
def clone_study(study_id: StudyId, body: StudyClone, session: SessionDep, conn: RedisDep, settings: SettingsDep, user: Editor) -> dict:
    """Create and queue a new study from this one's config with edits (a partial config and/or dotted overrides), on the source's
    queue unless `queue` names another."""
    source = studies.get(session, study_id)
    queue = queues.choose(settings, body.queue, fallback=source.queue)
    cfg = configs.derive(source.config, body.config, body.overrides, body.name)
    limits.check_config(cfg, settings)
    limits.check_active_studies(session, user.user_id, settings)
    tags = body.tags if body.tags is not None else [t.name for t in source.tags]
    study = studies.create(session, cfg, preset=source.preset, owner_id=user.user_id, tags=tags, parent_id=source.id, queue=queue)
    submission.submit(session, conn, study, settings)
    return studies.detail(study)


@router.post("/{study_id}/cancel", response_model=CancelOut, responses={**WRITE_ERRORS, **NOT_FOUND, **CONFLICT, **QUEUE_DOWN})
def cancel_study(study_id: StudyId, session: SessionDep, conn: RedisDep, _: Editor) -> dict:
    """Cancel a queued or running study: waiting jobs are dropped and running ones stopped; finished stages are kept."""
    study = studies.get(session, study_id)
    if study.status not in ("queued", "running"):
        raise Conflict(f"study {study.id} is {study.status}; only queued or running studies can be cancelled")
    n = submission.cancel(conn, study) if study.submitted else 0
    study.status = "cancelled"
    study.finished_at = utcnow()
    studies.touch(study)
    session.commit()
    return {"study": studies.public(study), "jobs_cancelled": n}


RETRYABLE = ("failed", "cancelled")


@router.post("/{study_id}/retry", response_model=StudyDetail, responses={**WRITE_ERRORS, **NOT_FOUND, **CONFLICT, **TOO_MANY, **QUEUE_DOWN})
def retry_study(
    study_id: StudyId, session: SessionDep, conn: RedisDep, settings: SettingsDep, _: Editor, body: StudyRetry | None = None
) -> dict:
    """Run a failed or cancelled study again in place: same id, run id and run directory, so finished stages are reused and
    only the unfinished ones run; optionally on another queue. 409 for queued, running or finished studies."""
    study = studies.get(session, study_id)
    if study.status not in RETRYABLE:
        hint = (
            "its results are complete; clone it to run a changed config"
            if study.status == "finished"
            else "it is still active; cancel it first to restart it"
        )
        raise Conflict(f"study {study.id} is {study.status}; only failed or cancelled studies can be retried ({hint})", state=study.status)
    queue = queues.choose(settings, body.queue if body else None, fallback=study.queue)
    limits.check_active_studies(session, study.owner_id, settings)  # it becomes active again, for its owner
    study.status, study.queue, study.error, study.finished_at = "queued", queue, None, None
    study.submitted, study.plan_job_id = False, None  # until Redis accepts it; the sync resubmits otherwise
    if study.progress:
        study.progress = {**study.progress, "state": "queued", "eta_s": None}
    # The stages that failed or were stopped will run again: show them as pending until the queue reports on them.
    for job in studies.jobs(session, study.id):
        if job.status in ("failed", "stopped", "cancelled"):
            job.status, job.error, job.step, job.total, job.eta_s = "pending", None, None, None, None
    studies.touch(study)
    session.commit()
    submission.submit(session, conn, study, settings)
    return studies.detail(study)


@router.get("/{study_id}/notes", response_model=list[NoteOut], responses=NOT_FOUND)
def list_notes(study: StudyDep, session: SessionDep) -> list[dict]:
    """Return the study's notes, oldest first."""
    return [
        {"id": n.id, "text": n.text, "author": n.author.name if n.author else None, "created_at": n.created_at}
        for n in studies.notes(session, study.id)
    ]


@router.post("/{study_id}/notes", status_code=201, response_model=NoteOut, responses={**WRITE_ERRORS, **NOT_FOUND})
def add_note(study_id: StudyId, body: NoteCreate, session: SessionDep, user: Editor) -> dict:
    """Attach a note to the study."""
    studies.get(session, study_id)
    note = studies.add_note(session, study_id, user.user_id, body.text)
    return {"id": note.id, "text": note.text, "author": user.user_name, "created_at": note.created_at}


@router.get("/{study_id}/jobs", response_model=list[JobOut], responses=NOT_FOUND)
def list_jobs(study: StudyDep, session: SessionDep) -> list[dict]:
    """Return the study's stage jobs as last mirrored from the queue (status, step/total, ETA, metrics, error, worker)."""
    return [progress.job_public(j) for j in studies.jobs(session, study.id)]


@router.get("/{study_id}/progress", response_model=ProgressOut, responses=NOT_FOUND)
def get_progress(study: StudyDep, session: SessionDep) -> dict:
    """Return the study's live progress: stages done of total, running stages with step/ETA/metrics, failures, log tail."""
    return progress.snapshot(session, study)


@router.get("/{study_id}/progress/stream", response_class=EventSourceResponse, responses=json_errors({**READ_ERRORS, **NOT_FOUND}))
async def stream_progress(study: StudyDep, session: SessionDep, request: Request) -> AsyncIterator[ServerSentEvent]:
    """Stream the progress as server-sent events ('progress' on every change; the stream ends once the study has ended)."""
    study_id, sessions = study.id, request.app.state.sessions
    session.close()  # do not hold a pooled connection for the life of the stream

    def look() -> dict:
        with sessions() as s:
            return jsonable_encoder(progress.snapshot(s, studies.get(s, study_id)))

    last = None
    n = 0
    while True:
        snap = await anyio.to_thread.run_sync(look)
        text = json.dumps(snap, sort_keys=True)
        if text != last:
            n += 1
            last = text
            yield ServerSentEvent(data=snap, event="progress", id=str(n))
        if snap["status"] in progress.TERMINAL:
            return
        await asyncio.sleep(STREAM_INTERVAL_S)
