"""The gallery: publish a result or a figure (title, tags, notes, a PNG thumbnail), star it, list and filter; ids are permalinks."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request, Response

from .. import gallery, studies, thumbnails
from ..auth import Principal
from ..deps import NOT_FOUND, READ_ERRORS, WRITE_ERRORS, Editor, Reader, SessionDep, SettingsDep
from ..errors import ApiError
from ..models import GalleryEntry
from ..schemas import GalleryCreate, GalleryOut, GalleryPage, GalleryUpdate, ThumbnailIn

router = APIRouter(prefix="/gallery", tags=["gallery"], responses=READ_ERRORS)
EntryId = Annotated[str, Path(min_length=1, max_length=16, description="A gallery entry's permalink id.")]


def _one(session: SessionDep, entry: GalleryEntry, viewer_id: int | None) -> dict[str, Any]:
    return gallery.public(session, [entry], viewer_id)[0]


def _own(entry: GalleryEntry, user: Principal, what: str) -> None:
    if entry.author_id != user.user_id and not user.can("admin"):
        raise ApiError(f"only the entry's author or an admin may {what}", status=403)


@router.post("", status_code=201, response_model=GalleryOut, responses={**WRITE_ERRORS, **NOT_FOUND})
def publish(body: GalleryCreate, session: SessionDep, settings: SettingsDep, user: Editor) -> dict[str, Any]:
    """Publish a study's result or one of its figures to the gallery, optionally with a PNG thumbnail; the answer's id is the permalink."""
    study = studies.get(session, body.study_id)
    png = thumbnails.from_base64(body.thumbnail, settings, "thumbnail") if body.thumbnail else None  # checked before anything is written
    entry = gallery.publish(session, study, body, user.user_id, png)
    return _one(session, entry, user.user_id)


@router.get("", response_model=GalleryPage)
def list_entries(
    session: SessionDep,
    viewer: Reader,
    tag: Annotated[list[str] | None, Query(description="Entries carrying every one of these tags.")] = None,
    study_id: Annotated[str | None, Query(max_length=64)] = None,
    kind: Annotated[Literal["result", "figure"] | None, Query()] = None,
    figure: Annotated[Literal["interpolation", "sparsity", "surface", "hessian"] | None, Query()] = None,
    q: Annotated[str | None, Query(max_length=200, description="Case-insensitive substring of the title or notes.")] = None,
    author: Annotated[str | None, Query(max_length=64)] = None,
    starred: Annotated[bool, Query(description="Only entries the caller starred (needs a token).")] = False,
    sort: Annotated[Literal["-created_at", "created_at", "-stars", "title"], Query()] = "-created_at",
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> dict[str, Any]:
    """List gallery entries, filtered, sorted (newest, oldest, most starred, title) and paginated."""
    if starred and viewer.anonymous:
        raise ApiError("starred=true lists the caller's stars, which needs a token", status=401, headers={"WWW-Authenticate": "Bearer"})
    f = gallery.Filter(
        tags=tag, study_id=study_id, kind=kind, figure=figure, q=q, author=author, starred_by=viewer.user_id if starred else None
    )
    rows, count = gallery.page(session, f, sort, limit, offset)
    return {"data": gallery.public(session, rows, viewer.user_id), "count": count, "limit": limit, "offset": offset}


@router.get("/{entry_id}", response_model=GalleryOut, responses=NOT_FOUND)
def get_entry(entry_id: EntryId, session: SessionDep, viewer: Reader) -> dict[str, Any]:
    """Return one gallery entry (the permalink)."""
    return _one(session, gallery.get(session, entry_id), viewer.user_id)


@router.patch("/{entry_id}", response_model=GalleryOut, responses={**WRITE_ERRORS, **NOT_FOUND})
def update_entry(entry_id: EntryId, body: GalleryUpdate, session: SessionDep, user: Editor) -> dict[str, Any]:
    """Change an entry's title, tags or notes (its author or an admin)."""
    entry = gallery.get(session, entry_id)
    _own(entry, user, "edit it")
    return _one(session, gallery.update(session, entry, body), user.user_id)


@router.delete("/{entry_id}", status_code=204, responses={**WRITE_ERRORS, **NOT_FOUND})
def delete_entry(entry_id: EntryId, session: SessionDep, user: Editor) -> None:
    """Remove an entry from the gallery (its author or an admin); the study and its results stay."""
    entry = gallery.get(session, entry_id)
    _own(entry, user, "delete it")
    session.delete(entry)
    session.commit()


@router.post("/{entry_id}/star", response_model=GalleryOut, responses={**WRITE_ERRORS, **NOT_FOUND})
def star(entry_id: EntryId, session: SessionDep, user: Editor) -> dict[str, Any]:
    """Star an entry (idempotent)."""
    entry = gallery.get(session, entry_id)
    assert user.user_id is not None  # editors always have a user
    gallery.star(session, entry, user.user_id, True)
    return _one(session, entry, user.user_id)


@router.delete("/{entry_id}/star", response_model=GalleryOut, responses={**WRITE_ERRORS, **NOT_FOUND})
def unstar(entry_id: EntryId, session: SessionDep, user: Editor) -> dict[str, Any]:
    """Remove the caller's star (idempotent)."""
    entry = gallery.get(session, entry_id)
    assert user.user_id is not None
    gallery.star(session, entry, user.user_id, False)
    return _one(session, entry, user.user_id)


_PNG_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"image/png": {}}, "description": "The PNG"},
    304: {"description": "Unchanged since the ETag in If-None-Match"},
}


@router.get("/{entry_id}/thumbnail.png", response_class=Response, responses={**NOT_FOUND, **_PNG_RESPONSES})
def get_thumbnail(entry_id: EntryId, request: Request, session: SessionDep, _: Reader) -> Response:
    """Return the entry's PNG thumbnail (ETag; 304 when If-None-Match matches); 404 when it has none."""
    gallery.get(session, entry_id)
    row = thumbnails.get(session, entry_id)
    tag = thumbnails.etag(row)
    # no-cache = revalidate every time: a replaced thumbnail is never shown stale, and the ETag makes revalidation cheap.
    # nosniff: the bytes are checked to be PNG-shaped, and a browser must never read them as anything else.
    headers = {"ETag": tag, "Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}
    if tag in [t.strip() for t in request.headers.get("if-none-match", "").split(",")]:
        return Response(status_code=304, headers=headers)
    return Response(row.png, media_type="image/png", headers=headers)


@router.put("/{entry_id}/thumbnail", response_model=GalleryOut, responses={**WRITE_ERRORS, **NOT_FOUND})
def put_thumbnail(entry_id: EntryId, body: ThumbnailIn, session: SessionDep, settings: SettingsDep, user: Editor) -> dict[str, Any]:
    """Set or replace an entry's PNG thumbnail (its author or an admin), e.g. for entries a script published."""
    entry = gallery.get(session, entry_id)
    _own(entry, user, "change its thumbnail")
    thumbnails.put(session, entry, thumbnails.from_base64(body.png, settings, "png"))
    return _one(session, entry, user.user_id)


@router.delete("/{entry_id}/thumbnail", status_code=204, responses={**WRITE_ERRORS, **NOT_FOUND})
def delete_thumbnail(entry_id: EntryId, session: SessionDep, user: Editor) -> None:
    """Remove an entry's thumbnail (its author or an admin): its card shows the drawn preview again; 404 when it has none."""
    entry = gallery.get(session, entry_id)
    _own(entry, user, "remove its thumbnail")
    if not thumbnails.remove(session, entry):
        thumbnails.get(session, entry_id)  # raises the 404 that says there is none
