"""Health of the service (database, Redis, live workers) and the list of workers."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from sqlalchemy import text

from lmc_core import __version__
from worker import queue as wq

from ..deps import QUEUE_DOWN, READ_ERRORS, Reader, RedisDep, SessionDep
from ..schemas import HealthOut
from ..submission import REDIS_DOWN, unavailable

router = APIRouter(tags=["health"])


@router.get("/health", response_model=HealthOut)
def health(session: SessionDep, conn: RedisDep) -> dict[str, Any]:
    """Return whether the database and Redis answer and how many workers are alive (no token needed)."""
    database: dict[str, Any] = {"ok": True, "backend": session.get_bind().dialect.name}
    try:
        session.execute(text("SELECT 1"))
    except Exception as err:  # any driver error means the same thing here: the store is not usable
        database.update(ok=False, error=f"{err.__class__.__name__}: {err}")
    redis_state: dict[str, Any] = {"ok": True}
    workers = None
    try:
        conn.ping()
        workers = len(wq.live_workers(conn))
    except REDIS_DOWN as err:
        redis_state.update(ok=False, error=f"{err.__class__.__name__}: {err}")
    ok = database["ok"] and redis_state["ok"]
    return {"status": "ok" if ok else "degraded", "database": database, "redis": redis_state, "workers": workers, "version": __version__}


@router.get("/workers", responses={**READ_ERRORS, **QUEUE_DOWN})
def list_workers(conn: RedisDep, _: Reader) -> list[dict[str, Any]]:
    """Return the live workers: name, queues, state, current job and stage, GPU, last heartbeat."""
    try:
        return wq.live_workers(conn)
    except REDIS_DOWN as err:
        raise unavailable(err, "the workers cannot be listed") from None
