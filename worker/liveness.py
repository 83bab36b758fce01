"""Which RQ workers are alive: a worker is judged by its Redis key, its heartbeat and (on this host) its process.

Also what follows from that: the live workers and what each runs, how many listen on each queue, and forgetting
workers whose process is certainly gone.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterable
from datetime import datetime
from typing import Any

import redis
from rq import worker_registration
from rq.exceptions import NoSuchJobError
from rq.job import Job
from rq.utils import utcparse
from rq.worker import Worker

from . import defaults, keys
from .connection import SERIALIZER, get_queue, read_hash
from .status import iso_time


def pid_alive(pid: int) -> bool:
    """Return whether process `pid` of this host exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a killed but unreaped process is a zombie: gone for our purposes
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def worker_alive(conn: redis.Redis, name: str | None, since: datetime | None = None) -> bool:
    """Return whether RQ worker `name` is alive (and, with `since`, has been alive since then).

    Dead: its Redis key is gone or marked dead; it was born after `since` (restarted under the same name);
    it ran on this host and its process is gone; or its heartbeat is older than WORKER_DEAD_AFTER seconds.
    """
    if not name:
        return False
    data = read_hash(conn, Worker.redis_worker_namespace_prefix + name)
    if not data or "death" in data or "birth" not in data:
        return False
    if since is not None and utcparse(data["birth"]) > since:
        return False
    if data.get("hostname") == socket.gethostname() and data.get("pid") and not pid_alive(int(data["pid"])):
        return False
    if data.get("last_heartbeat"):
        server_now = conn.time()[0]
        if server_now - utcparse(data["last_heartbeat"]).timestamp() > defaults.WORKER_DEAD_AFTER:
            return False
    return True


def reap_dead_workers(conn: redis.Redis) -> list[str]:
    """Forget RQ workers whose process is certainly gone (this host, pid dead); return their names."""
    gone = []
    for w in Worker.all(connection=conn, serializer=SERIALIZER):
        if w.hostname == socket.gethostname() and w.pid and not pid_alive(int(w.pid)):
            with conn.pipeline() as pipe:
                pipe.delete(w.key, keys.worker_info_key(w.name))
                worker_registration.unregister(w, pipe)
                pipe.execute()
            gone.append(w.name)
    return gone


def live_workers(conn: redis.Redis) -> list[dict[str, Any]]:
    """Return one dict per live worker: name, queues, state, current job (and its stage), gpu, pid, hostname, last heartbeat."""
    out = []
    for w in Worker.all(connection=conn, serializer=SERIALIZER):
        if not worker_alive(conn, w.name):
            continue
        extra = read_hash(conn, keys.worker_info_key(w.name))
        job_id = w.get_current_job_id()
        stage = None
        if job_id:
            with contextlib.suppress(NoSuchJobError):  # it finished and expired meanwhile
                stage = Job.fetch(job_id, connection=conn, serializer=SERIALIZER).meta.get("stage")
        out.append(
            {
                "name": w.name,
                "queues": w.queue_names(),
                "state": w.get_state(),
                "current_job": job_id,
                "stage": stage,
                "gpu": extra.get("gpu") or None,
                "threads": extra.get("threads") or None,
                "pid": w.pid,
                "hostname": w.hostname,
                "birth": iso_time(w.birth_date),
                "last_heartbeat": iso_time(w.last_heartbeat),
                "successful_jobs": w.successful_job_count,
                "failed_jobs": w.failed_job_count,
            }
        )
    return sorted(out, key=lambda d: d["name"])


def workers_per_queue(conn: redis.Redis) -> dict[str, int]:
    """Return {queue name: number of live workers listening on it} (a worker on several queues counts for each)."""
    counts: dict[str, int] = {}
    for w in Worker.all(connection=conn, serializer=SERIALIZER):
        if worker_alive(conn, w.name):
            for name in w.queue_names():
                counts[name] = counts.get(name, 0) + 1
    return counts


def queue_summary(conn: redis.Redis, names: Iterable[str]) -> list[dict[str, Any]]:
    """Return one dict per queue in `names`: name, workers (live worker names), busy (how many run a job now), queued (waiting jobs)."""
    workers = live_workers(conn)
    out = []
    for name in names:
        mine = [w for w in workers if name in w["queues"]]
        out.append(
            {
                "name": name,
                "workers": [w["name"] for w in mine],
                "busy": sum(1 for w in mine if w["current_job"]),
                "queued": get_queue(conn, name).count,
            }
        )
    return out
