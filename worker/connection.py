"""How this layer talks to Redis and RQ: the client, the serializer, queue objects, and decoding replies and job states."""

from __future__ import annotations

import os

import redis
from rq import Queue
from rq.exceptions import InvalidJobOperation
from rq.job import Job, JobStatus
from rq.serializers import JSONSerializer

from . import defaults

# JSON, not pickle: job payloads are plain config dicts, and unpickling what sits in Redis would run code.
SERIALIZER = JSONSerializer


def connect(url: str | None = None) -> redis.Redis:
    """Return a Redis client for `url` (default LMC_REDIS_URL) whose blocking reads never time out."""
    # redis-py 8 defaults to a 5 s socket timeout, which breaks RQ's blocking dequeue and result waits.
    return redis.Redis.from_url(url or os.environ.get("LMC_REDIS_URL") or defaults.REDIS_URL, socket_timeout=None)


def get_queue(conn: redis.Redis, name: str) -> Queue:
    """Return RQ queue `name` with this layer's serializer and job timeout."""
    return Queue(name, connection=conn, serializer=SERIALIZER, default_timeout=defaults.JOB_TIMEOUT)


def decode(value: bytes | str) -> str:
    """Return a Redis reply as text (the client returns bytes, as RQ requires)."""
    return value.decode() if isinstance(value, bytes) else value


def read_hash(conn: redis.Redis, key: str) -> dict[str, str]:
    """Return Redis hash `key` as text ({} when it does not exist)."""
    return {decode(k): decode(v) for k, v in conn.hgetall(key).items()}


def job_status(job: Job | None) -> JobStatus | None:
    """Return the status `job` had when fetched, or None for a missing job or one whose status RQ cannot read."""
    if job is None:
        return None
    try:
        return job.get_status(refresh=False)
    except InvalidJobOperation:
        return None
