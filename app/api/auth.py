"""API tokens: random secrets shown once, stored as sha256, each carrying a role (viewer < editor < admin)."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from .models import ROLES, ApiToken, User, utcnow

TOKEN_PREFIX = "lmc_"


@dataclass(frozen=True)
class Principal:
    """Who is calling: a user and the role of the token they presented (anonymous readers have no user)."""

    user_id: int | None
    user_name: str | None
    role: str | None
    token_id: int | None = None

    @property
    def anonymous(self) -> bool:
        """Return True when no token was presented."""
        return self.user_id is None

    def can(self, role: str) -> bool:
        """Return True when this principal's role is `role` or above."""
        return self.role is not None and ROLES.index(self.role) >= ROLES.index(role)


ANONYMOUS = Principal(None, None, None)


def hash_token(token: str) -> str:
    """Return the sha256 hex digest under which `token` is stored."""
    return hashlib.sha256(token.encode()).hexdigest()


def check_role(role: str) -> str:
    """Return `role` if it is one of viewer, editor, admin; raise ValueError naming them otherwise."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; choose one of: {', '.join(ROLES)}")
    return role


def get_or_create_user(session: Session, name: str) -> User:
    """Return the user called `name`, creating it (not committed) when missing."""
    name = name.strip()
    if not name or len(name) > 64:
        raise ValueError("a user name is 1 to 64 characters")
    user = session.scalar(select(User).where(User.name == name))
    if user is None:
        user = User(name=name)
        session.add(user)
        session.flush()
    return user


def create_token(session: Session, user: User | str, role: str) -> tuple[str, ApiToken]:
    """Return (the token in clear, its row) for `user` with `role`, committed; the clear token is never stored."""
    check_role(role)
    if isinstance(user, str):
        user = get_or_create_user(session, user)
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(user_id=user.id, token_hash=hash_token(token), prefix=token[: len(TOKEN_PREFIX) + 6], role=role)
    session.add(row)
    session.commit()
    return token, row


def authenticate(session: Session, token: str) -> Principal | None:
    """Return the principal a presented token stands for, or None when it is unknown or revoked."""
    row = session.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(token)))
    if row is None or row.revoked_at is not None:
        return None
    now = utcnow()
    # Touch at most once a minute, so reads do not turn into a write per request.
    if row.last_used_at is None or (now - row.last_used_at).total_seconds() > 60:
        row.last_used_at = now
        session.commit()
    return Principal(row.user_id, row.user.name, row.role, row.id)


def revoke_token(session: Session, token_id: int) -> ApiToken | None:
    """Return the token row after marking it revoked (committed), or None when there is no such token."""
    row = session.get(ApiToken, token_id)
    if row is not None and row.revoked_at is None:
        row.revoked_at = utcnow()
        session.commit()
    return row
