"""Handing studies to the queue (worker.submit_study) after the database has committed them; Redis trouble becomes a 503."""

from __future__ import annotations

import logging
from typing import Any

import redis
from sqlalchemy.orm import Session

from worker import cancel_study, submit_study

from .errors import QueueUnavailable
from .models import Study
from .settings import Settings

log = logging.getLogger("lmc.api")

# What a Redis outage looks like from redis-py (ConnectionError, TimeoutError, LockError are RedisErrors) and the socket.
REDIS_DOWN = (redis.exceptions.RedisError, OSError)


def unavailable(err: BaseException, what: str, **extra: Any) -> QueueUnavailable:
    """Return the 503 for a Redis failure while doing `what`."""
    return QueueUnavailable(
        f"the job queue (Redis) is not reachable, so {what}: {err.__class__.__name__}: {err}. Check that Redis runs at LMC_REDIS_URL.",
        **extra,
    )


def submit(session: Session, conn: redis.Redis, study: Study, settings: Settings) -> str:
    """Return the plan job id after submitting `study` to Redis and recording that (committed); 503 if Redis is down.

    The study row was committed first, so on a 503 it stays recorded as queued with submitted=False and the
    sync task's reconciliation submits it once Redis answers.
    """
    try:
        job_id = submit_study(conn, study.id, study.config, str(settings.artifact_root), study.queue or settings.queue)
    except REDIS_DOWN as err:
        log.warning("study %s recorded but not submitted: %s", study.id, err)
        raise unavailable(
            err,
            f"study {study.id} is recorded as queued but not yet submitted; it will be submitted automatically when Redis is back",
            study_id=study.id,
        ) from None
    study.submitted, study.plan_job_id = True, job_id
    session.commit()
    return job_id


def cancel(conn: redis.Redis, study: Study) -> int:
    """Return how many jobs were cancelled or stopped for `study`; 503 if Redis is down (nothing changes then)."""
    try:
        return cancel_study(conn, study.id)
    except REDIS_DOWN as err:
        raise unavailable(err, f"study {study.id} could not be cancelled (it keeps its state)") from None
