"""Queues a study may be submitted to: the operator lists them (LMC_QUEUE, LMC_QUEUES), workers choose theirs (`lmc worker --queues`).

A name outside the list is refused rather than created: RQ would accept any name, and a typo would leave the study
waiting forever on a queue no worker listens to.
"""

from __future__ import annotations

from typing import Any

import redis

from worker import queue_summary

from .errors import FieldErrors
from .settings import Settings
from .submission import REDIS_DOWN


def choose(settings: Settings, wanted: str | None, fallback: str | None = None, loc: str = "queue") -> str:
    """Return the queue to use: `wanted` if allowed (422 at `loc` naming the allowed ones otherwise), else `fallback` when still
    allowed, else LMC_QUEUE."""
    allowed = settings.allowed_queues
    if wanted is not None:
        if wanted not in allowed:
            msg = (
                f"unknown queue {wanted!r}; this server allows {', '.join(allowed)} (settings LMC_QUEUE and LMC_QUEUES; "
                "GET /api/queues shows their workers)"
            )
            raise FieldErrors([{"loc": loc, "msg": msg, "type": "queue"}], f"{loc}: {msg}")
        return wanted
    return fallback if fallback in allowed else settings.queue


def summary(conn: redis.Redis, settings: Settings) -> list[dict[str, Any]]:
    """Return one QueueOut per allowed queue, default first; workers, busy and queued are None when Redis does not answer."""
    names = settings.allowed_queues
    try:
        rows = {r["name"]: r for r in queue_summary(conn, names)}
    except REDIS_DOWN:
        rows = {}
    return [
        {
            "name": n,
            "default": n == settings.queue,
            "workers": rows[n]["workers"] if n in rows else None,
            "busy": rows[n]["busy"] if n in rows else None,
            "queued": rows[n]["queued"] if n in rows else None,
        }
        for n in names
    ]
