"""The FastAPI application: `create_app()` wires settings, store, queue, routes and the sync task (no torch here).

Run it with `uvicorn --factory app.api.main:create_app`. Start-up creates the data directory, upgrades the
database to the latest migration, reconciles the store with Redis, and starts the sync task.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

import anyio
from fastapi import FastAPI
from fastapi.routing import APIRoute

import worker
from lmc_core import __version__

from . import errors, openapi
from .db import make_engine, make_sessions, migrate
from .limits import RequestSizeLimit
from .routes import gallery, health, presets, results, studies, users
from .settings import Settings
from .sync import Syncer

log = logging.getLogger("lmc.api")


async def _sync_forever(syncer: Syncer, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            await anyio.to_thread.run_sync(syncer.tick)
        except Exception:  # a bad row or file must not stop mirroring for every other study
            log.exception("sync tick failed; retrying in %.1f s", interval)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Prepare directories and the database, reconcile with Redis, run the sync task until shutdown."""
    settings: Settings = app.state.settings
    settings.prepare_dirs()
    await anyio.to_thread.run_sync(migrate, app.state.engine)
    syncer = Syncer(app.state.sessions, app.state.redis, settings)
    app.state.syncer = syncer
    try:
        await anyio.to_thread.run_sync(syncer.tick)  # reconciliation: a Redis restarted empty loses no study
    except Exception:
        log.exception("start-up reconciliation failed; the sync task will retry")
    task = asyncio.create_task(_sync_forever(syncer, settings.sync_interval_s)) if settings.sync_interval_s > 0 else None
    try:
        yield
    finally:
        if task is not None:
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task
        app.state.redis.close()
        app.state.engine.dispose()


def _operation_id(route: APIRoute) -> str:
    return f"{route.tags[0]}-{route.name}" if route.tags else route.name


def create_app(settings: Settings | None = None) -> FastAPI:
    """Return the LMC Lab API: routes under /api, OpenAPI at /openapi.json, docs at /docs."""
    settings = settings or Settings()
    app = FastAPI(
        title="LMC Lab",
        version=__version__,
        lifespan=lifespan,
        generate_unique_id_function=_operation_id,
        description="Studies of linear mode connectivity in sparse networks: create and follow studies, fetch results "
        "and figures, publish to the gallery. Reads may be anonymous (LMC_ANONYMOUS_READ); writes need a token.",
    )
    engine = make_engine(settings.database_url)  # connects lazily: nothing touches the database before start-up
    app.state.settings = settings
    app.state.engine = engine
    app.state.sessions = make_sessions(engine)
    app.state.redis = worker.connect(settings.redis_url)
    errors.install(app)
    app.add_middleware(RequestSizeLimit, max_bytes=settings.max_request_bytes)
    routers = [module.router for module in (health, studies, results, presets, gallery, users)]
    for router in routers:  # straight onto the app: every level of router nesting rebuilds each route once more
        app.include_router(router, prefix="/api")
    openapi.install(app, [("/api", r) for r in routers], settings.anonymous_read)
    return app
