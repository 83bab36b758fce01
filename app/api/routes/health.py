"""Health of the service (database, Redis, live workers), the list of workers, and the queues a study may choose."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from sqlalchemy import text

from lmc_core import __version__
from worker import live_workers

from .. import queues
from ..deps import QUEUE_DOWN, READ_ERRORS, Reader, RedisDep, SessionDep, SettingsDep
from ..schemas import HealthOut, QueueOut
from ..submission import REDIS_DOWN, unavailable

router = APIRouter(tags=["health"])


@router.get("/health", response_model=HealthOut)
def health(session: SessionDep, conn: RedisDep) -> dict[str, Any]:
    """Return whether the database and Redis answer and how many workers are alive (no token needed)."""
    database: dict[str, Any] = {"ok": True, "backend": session.get_bind().dialect.name}
    try:
        session.execute(text("SELECT 1"))
    except Exception as err:  # noqa: BLE001  (any driver error means the same thing here: the store is not usable)
        database.update(ok=False, error=f"{err.__class__.__name__}: {err}")
    redis_state: dict[str, Any] = {"ok": True}
    workers = None
    try:
        conn.ping()
        workers = len(live_workers(conn))
    except REDIS_DOWN as err:
        redis_state.update(ok=False, error=f"{err.__class__.__name__}: {err}")
    ok = database["ok"] and redis_state["ok"]
    return {"status": "ok" if ok else "degraded", "database": database, "redis": redis_state, "workers": workers, "version": __version__}


@router.get("/workers", responses={**READ_ERRORS, **QUEUE_DOWN})
def list_workers(conn: RedisDep, _: Reader) -> list[dict[str, Any]]:
    """Return the live workers: name, queues, state, current job and stage, GPU, last heartbeat."""
    try:
        return live_workers(conn)
    except REDIS_DOWN as err:
        raise unavailable(err, "the workers cannot be listed") from None


@router.get("/queues", response_model=list[QueueOut], responses=READ_ERRORS)
def list_queues(conn: RedisDep, settings: SettingsDep, _: Reader) -> list[dict[str, Any]]:
    """Return the queues a study may name (LMC_QUEUE first), each with its live workers and waiting jobs (null when Redis is down)."""
    return queues.summary(conn, settings)
