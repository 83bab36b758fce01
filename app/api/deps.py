"""Route dependencies: settings, a database session, the Redis connection, and who may do what."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

import redis
from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from . import auth
from .auth import Principal
from .errors import ApiError
from .schemas import ErrorOut, FieldErrorsOut
from .settings import Settings

bearer = HTTPBearer(
    auto_error=False,
    description="An API token: `lmc token create --user NAME --role viewer|editor|admin`, sent as 'Authorization: Bearer <token>'.",
)
_CHALLENGE = {"WWW-Authenticate": "Bearer"}


def get_settings(request: Request) -> Settings:
    """Return the app's settings."""
    return request.app.state.settings


def get_session(request: Request) -> Iterator[Session]:
    """Yield a database session, closed (and rolled back if uncommitted) after the request."""
    with request.app.state.sessions() as session:
        yield session


def get_redis(request: Request) -> redis.Redis:
    """Return the app's Redis connection (connects lazily; calls fail with a RedisError when Redis is down)."""
    return request.app.state.redis


SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionDep = Annotated[Session, Depends(get_session)]
RedisDep = Annotated[redis.Redis, Depends(get_redis)]


def get_principal(session: SessionDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)]) -> Principal:
    """Return who presented the request's token (anonymous without one); 401 for an unknown or revoked token."""
    if credentials is None:
        return auth.ANONYMOUS
    principal = auth.authenticate(session, credentials.credentials)
    if principal is None:
        raise ApiError("the token is not valid (unknown or revoked); ask an admin for a new one", status=401, headers=_CHALLENGE)
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]


def reader(principal: PrincipalDep, settings: SettingsDep) -> Principal:
    """Return the caller if they may read: anyone when anonymous reads are on, else any token holder."""
    if principal.anonymous and not settings.anonymous_read:
        raise ApiError(
            "this server requires a token to read (LMC_ANONYMOUS_READ=false); send 'Authorization: Bearer <token>' "
            "(`lmc token create --user NAME --role viewer` makes one)",
            status=401,
            headers=_CHALLENGE,
        )
    return principal


def _needs(principal: Principal, role: str, what: str) -> Principal:
    if principal.anonymous:
        raise ApiError(
            f"{what} needs a token with role {role} or above; send 'Authorization: Bearer <token>'", status=401, headers=_CHALLENGE
        )
    if not principal.can(role):
        raise ApiError(f"{what} needs role {role} or above; your token's role is {principal.role}", status=403)
    return principal


def editor(principal: PrincipalDep) -> Principal:
    """Return the caller if their token's role is editor or admin (every write); 401 without a token, 403 for viewers."""
    return _needs(principal, "editor", "writing")


def admin(principal: PrincipalDep) -> Principal:
    """Return the caller if their token's role is admin (user and token management)."""
    return _needs(principal, "admin", "managing users and tokens")


Reader = Annotated[Principal, Depends(reader)]
Editor = Annotated[Principal, Depends(editor)]
Admin = Annotated[Principal, Depends(admin)]


def _doc(description: str, model: Any = ErrorOut) -> dict[str, Any]:
    return {"model": model, "description": description}


# Documented error responses, so the OpenAPI schema lists every status a route can answer with.
READ_ERRORS: dict[int | str, dict[str, Any]] = {
    401: _doc("No token where one is needed, or an unknown or revoked token"),
    422: _doc("Invalid request: one entry per field, with its dotted path", FieldErrorsOut),
}
BODY_ERRORS: dict[int | str, dict[str, Any]] = {
    400: _doc("The body is not JSON (or not UTF-8)"),
    413: _doc("Request body over LMC_MAX_REQUEST_BYTES"),
}
WRITE_ERRORS: dict[int | str, dict[str, Any]] = {**READ_ERRORS, **BODY_ERRORS, 403: _doc("The token's role may not do this")}
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: _doc("No such study, preset, stage or entry; the message names what exists")}


def json_errors(responses: dict[int | str, dict[str, Any]]) -> dict[int | str, dict[str, Any]]:
    """Return `responses` with their models spelled out as application/json, for routes whose own media type is not JSON.

    FastAPI documents a response model under the route's media type (text/event-stream for SSE), which is not what
    an error answers with.
    """
    return {
        code: {
            "description": r["description"],
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{r['model'].__name__}"}}},
        }
        for code, r in responses.items()
    }


CONFLICT: dict[int | str, dict[str, Any]] = {409: _doc("Not possible in the study's current state")}
TOO_MANY: dict[int | str, dict[str, Any]] = {429: _doc("Active studies per user over LMC_MAX_JOBS_PER_USER")}
QUEUE_DOWN: dict[int | str, dict[str, Any]] = {503: _doc("Redis is not reachable; the message says what was and was not recorded")}
