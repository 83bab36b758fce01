"""Limits an operator sets: request size (413), grid resolution and epochs (422), active studies per user (429).

Every refusal names the limit and the setting that raises it, so the person hitting it knows whom to ask.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lmc_core.foundations.config import StudyConfig

from .errors import FieldErrors, TooManyJobs
from .models import ACTIVE_STATES, Study
from .settings import Settings


def check_config(cfg: StudyConfig, settings: Settings) -> None:
    """Raise 422 naming each field of `cfg` beyond the configured limits (grid resolution, epochs)."""
    errors: list[dict[str, Any]] = []

    def over(loc: str, value: int | None, limit: int, setting: str) -> None:
        if value is not None and value > limit:
            errors.append({"loc": loc, "msg": f"{value} exceeds this server's limit of {limit} (setting {setting})", "type": "limit"})

    surface = cfg.analysis.surface
    over("analysis.surface.resolution", surface.resolution if surface else None, settings.max_grid_resolution, "LMC_MAX_GRID_RESOLUTION")
    over("train.epochs", cfg.train.epochs, settings.max_epochs, "LMC_MAX_EPOCHS")
    if cfg.synthetic.sets:  # synthetic.train only runs when the study has synthetic sets
        over("synthetic.train.epochs", cfg.synthetic.train.epochs, settings.max_epochs, "LMC_MAX_EPOCHS")
    if errors:
        raise FieldErrors(errors, "the study exceeds this server's limits: " + "; ".join(f"{e['loc']}: {e['msg']}" for e in errors))


def check_active_studies(session: Session, user_id: int | None, settings: Settings) -> None:
    """Raise 429 when the user already has the configured number of queued or running studies."""
    limit = settings.max_jobs_per_user
    if not limit or user_id is None:
        return
    active = session.scalar(select(func.count()).select_from(Study).where(Study.owner_id == user_id, Study.status.in_(ACTIVE_STATES))) or 0
    if active >= limit:
        raise TooManyJobs(
            f"you have {active} active (queued or running) studies; the limit is {limit} per user "
            f"(setting LMC_MAX_JOBS_PER_USER); cancel one or wait for one to finish",
            limit=limit,
            active=active,
        )


class RequestSizeLimit:
    """ASGI middleware answering 413 when a request body exceeds `max_bytes`, whether or not it declares its length."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    def _message(self, size: int | None) -> bytes:
        said = f"{size} bytes" if size is not None else "more bytes"
        return json.dumps(
            {
                "detail": f"request body of {said} exceeds this server's limit of {self.max_bytes} bytes (setting LMC_MAX_REQUEST_BYTES)",
                "limit": self.max_bytes,
            }
        ).encode()

    async def _reject(self, send: Send, size: int | None) -> None:
        body = self._message(size)
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._reject(send, int(declared))
            return
        # Chunked bodies carry no length up front: read up to the limit here, then replay what was read.
        chunks: list[bytes] = []
        seen = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                await self.app(scope, _replay([message], receive), send)
                return
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > self.max_bytes:
                await self._reject(send, None)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        await self.app(scope, _replay([{"type": "http.request", "body": b"".join(chunks), "more_body": False}], receive), send)


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """Return a receive callable that yields `messages` first, then defers to `receive`."""
    pending = list(messages)

    async def replay() -> Message:
        return pending.pop(0) if pending else await receive()

    return replay
