"""A run's log tail: a bounded Redis list of timestamped lines that the run's jobs append to and study_status shows."""

from __future__ import annotations

import time

import redis

from . import defaults
from .connection import decode
from .keys import log_key


def append_log(conn: redis.Redis, run_id: str, line: str) -> None:
    """Append a timestamped line to a run's bounded log tail."""
    stamp = time.strftime("%H:%M:%S")
    with conn.pipeline() as pipe:
        pipe.rpush(log_key(run_id), f"{stamp} {line}")
        pipe.ltrim(log_key(run_id), -defaults.LOG_TAIL, -1)
        pipe.expire(log_key(run_id), defaults.FAILURE_TTL)
        pipe.execute()


def log_tail(conn: redis.Redis, run_id: str) -> list[str]:
    """Return the last LOG_TAIL lines of a run's log, oldest first."""
    return [decode(x) for x in conn.lrange(log_key(run_id), -defaults.LOG_TAIL, -1)]
