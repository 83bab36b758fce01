"""The RQ worker that runs study jobs: RQ's forking Worker with this layer's TTLs, serializer and dead-worker recovery.

Torch-free itself; `lmc worker` (worker/commands.py) imports torch before building it so every forked job
starts with torch already loaded.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Sequence
from typing import Any

import redis
from rq.worker import Worker

from . import defaults, keys
from .abandoned import requeue_abandoned
from .connection import SERIALIZER
from .liveness import reap_dead_workers

log = logging.getLogger(__name__)


class LmcWorker(Worker):
    """A forking RQ worker whose maintenance also requeues jobs abandoned by dead workers (see abandoned.requeue_abandoned)."""

    def run_maintenance_tasks(self) -> None:
        """Reap dead workers and requeue their jobs, then run RQ's own maintenance."""
        # Ours first: RQ's cleanup would otherwise fail an abandoned job for good once its registry entry expires.
        try:
            reap_dead_workers(self.connection)
            ids = requeue_abandoned(self.connection, self.queue_names())
            if ids:
                log.warning("requeued %d job(s) abandoned by dead workers: %s", len(ids), ", ".join(ids))
        except redis.RedisError:
            log.exception("requeue_abandoned failed; RQ's own maintenance still runs")
        super().run_maintenance_tasks()  # type: ignore[no-untyped-call]  # rq leaves this hook unannotated

    def register_death(self) -> None:
        """Deregister as RQ does, and drop the GPU and thread record that live_workers reads."""
        super().register_death()  # type: ignore[no-untyped-call]  # rq leaves this hook unannotated
        self.connection.delete(keys.worker_info_key(self.name))


def watch_parent(stop: threading.Event, parent: int | None = None) -> None:
    """Return when `stop` is set; exit the process at once if its parent (default: the current one) is, or becomes, another process.

    RQ's work horse runs in its own process group, so SIGKILLing its worker leaves it running: it would
    hold the GPU, ignore stop commands, and race the requeued copy of its job.
    """
    parent = os.getppid() if parent is None else parent
    while True:
        if os.getppid() != parent:
            os._exit(1)
        if stop.wait(defaults.PARENT_WATCH_INTERVAL_S):
            return


def default_name(gpu: str | None = None) -> str:
    """Return a worker name that says where it runs: lmc-<host>[-gpu<N>]-<pid>."""
    host = socket.gethostname().split(".")[0]
    return f"lmc-{host}" + (f"-gpu{gpu}" if gpu not in (None, "") else "") + f"-{os.getpid()}"


def make_worker(
    conn: redis.Redis,
    queues: Sequence[str] = (defaults.DEFAULT_QUEUE,),
    name: str | None = None,
    gpu: str | None = None,
    threads: int | None = None,
    **kwargs: Any,
) -> LmcWorker:
    """Return an LmcWorker on `queues` with the layer's TTLs, and record its GPU and thread count for live_workers."""
    name = name or default_name(gpu)
    worker = LmcWorker(
        list(queues),
        name=name,
        connection=conn,
        serializer=SERIALIZER,
        worker_ttl=defaults.WORKER_TTL,
        job_monitoring_interval=defaults.JOB_MONITORING_INTERVAL,
        maintenance_interval=defaults.MAINTENANCE_INTERVAL,
        default_result_ttl=defaults.RESULT_TTL,
        **kwargs,
    )
    conn.hset(
        keys.worker_info_key(name), mapping={"gpu": "" if gpu is None else str(gpu), "threads": "" if threads is None else str(threads)}
    )
    return worker
