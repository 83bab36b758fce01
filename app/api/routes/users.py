"""Who am I, and (admin only) users and API tokens: tokens are shown once at creation and stored hashed."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path
from sqlalchemy import func, select

from .. import auth
from ..deps import NOT_FOUND, READ_ERRORS, WRITE_ERRORS, Admin, PrincipalDep, SessionDep
from ..errors import Conflict, FieldErrors, NotFound
from ..models import ApiToken, User
from ..schemas import MeOut, TokenCreate, TokenCreated, TokenOut, UserCreate, UserOut

router = APIRouter(tags=["users"], responses=READ_ERRORS)


def _token(row: ApiToken) -> dict[str, Any]:
    return {
        "id": row.id,
        "user": row.user.name,
        "role": row.role,
        "prefix": row.prefix,
        "created_at": row.created_at,
        "last_used_at": row.last_used_at,
        "revoked_at": row.revoked_at,
    }


@router.get("/me", response_model=MeOut)
def me(principal: PrincipalDep) -> dict[str, Any]:
    """Return the caller's user name and role (anonymous without a token)."""
    return {"user": principal.user_name, "role": principal.role, "anonymous": principal.anonymous}


@router.get("/users", response_model=list[UserOut], responses=WRITE_ERRORS)
def list_users(session: SessionDep, _: Admin) -> list[dict[str, Any]]:
    """Return every user with the number of tokens they hold (admin)."""
    live = dict(
        session.execute(select(ApiToken.user_id, func.count()).where(ApiToken.revoked_at.is_(None)).group_by(ApiToken.user_id)).all()
    )
    return [
        {"id": u.id, "name": u.name, "created_at": u.created_at, "tokens": live.get(u.id, 0)}
        for u in session.scalars(select(User).order_by(User.name))
    ]


@router.post("/users", status_code=201, response_model=UserOut, responses={**WRITE_ERRORS, 409: {"description": "The name is taken"}})
def create_user(body: UserCreate, session: SessionDep, _: Admin) -> dict[str, Any]:
    """Create a user (admin); give them a token with POST /api/tokens."""
    if session.scalar(select(User).where(User.name == body.name.strip())) is not None:
        raise Conflict(f"user {body.name!r} exists")
    try:
        user = auth.get_or_create_user(session, body.name)
    except ValueError as err:
        raise FieldErrors([{"loc": "name", "msg": str(err), "type": "value_error"}], str(err)) from None
    session.commit()
    return {"id": user.id, "name": user.name, "created_at": user.created_at, "tokens": 0}


@router.get("/tokens", response_model=list[TokenOut], responses=WRITE_ERRORS)
def list_tokens(session: SessionDep, _: Admin) -> list[dict[str, Any]]:
    """Return every token's id, user, role and first characters (never the token or its hash) (admin)."""
    return [_token(t) for t in session.scalars(select(ApiToken).order_by(ApiToken.id))]


@router.post("/tokens", status_code=201, response_model=TokenCreated, responses=WRITE_ERRORS)
def create_token(body: TokenCreate, session: SessionDep, _: Admin) -> dict[str, Any]:
    """Create a token for a user (created when missing) with a role; the token is in this response only (admin)."""
    try:
        token, row = auth.create_token(session, body.user, body.role)
    except ValueError as err:
        raise FieldErrors([{"loc": "user", "msg": str(err), "type": "value_error"}], str(err)) from None
    return {**_token(row), "token": token}


@router.delete("/tokens/{token_id}", response_model=TokenOut, responses={**WRITE_ERRORS, **NOT_FOUND})
def revoke_token(token_id: Annotated[int, Path(ge=1, le=2**31 - 1)], session: SessionDep, _: Admin) -> dict[str, Any]:
    """Revoke a token; requests carrying it get 401 from now on (admin)."""
    row = auth.revoke_token(session, token_id)
    if row is None:
        raise NotFound(f"no token with id {token_id}; list tokens with GET /api/tokens")
    return _token(row)
