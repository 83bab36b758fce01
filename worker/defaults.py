"""Every setting of the worker layer, in one place; the timing knobs can be overridden from the environment.

RQ's own defaults are sized for short web jobs (180 s timeout, results kept 500 s, a dead worker noticed
after 420-600 s); a study stage can train for hours and a dead GPU box should be noticed in about a minute.
The names this layer writes into Redis live in `worker.keys`.
"""

from __future__ import annotations

import os


def _env_int(name: str, default: int) -> int:
    """Return the integer in environment variable `name`, or `default` when it is unset or empty."""
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else default


DEFAULT_QUEUE = "lmc"
REDIS_URL = "redis://127.0.0.1:6379/0"  # LMC_REDIS_URL overrides (same default as app/api/settings.py)

# Job lifetimes. A stage is a single training / distillation / analysis and may run for hours on a GPU.
JOB_TIMEOUT = 24 * 3600  # seconds
PLAN_TIMEOUT = 30 * 60  # the plan job only hashes the config and checks which stage files exist
RESULT_TTL = 24 * 3600  # Redis keeps a finished job a day; the results themselves live in the artifact root
FAILURE_TTL = 30 * 24 * 3600  # a failed stage's traceback stays visible until someone looks at it

# Progress reporting from inside a job.
PROGRESS_INTERVAL_S = 1.0  # at most one job.meta write per second, however often lmc_core reports
LOG_INTERVAL_S = 10.0  # a progress line joins the log tail at most this often; messages always do
LOG_TAIL = 200  # lines kept per run in Redis
ERROR_CHARS = 8000  # the end of a traceback shown in study_status

# Liveness. A busy RQ worker refreshes its heartbeat every JOB_MONITORING_INTERVAL seconds, an idle one
# every WORKER_TTL - 15 s; a started job whose worker's heartbeat is older than WORKER_DEAD_AFTER (or whose
# worker process is gone from this host) is requeued.
WORKER_TTL = _env_int("LMC_WORKER_TTL", 60)
JOB_MONITORING_INTERVAL = _env_int("LMC_JOB_MONITORING_INTERVAL", 10)
WORKER_DEAD_AFTER = _env_int("LMC_WORKER_DEAD_AFTER", 90)
MAINTENANCE_INTERVAL = _env_int("LMC_MAINTENANCE_INTERVAL", 60)  # how often an idle worker looks for abandoned jobs
MAX_ABANDONED_REQUEUES = 3  # a stage that kills its worker every time (e.g. the host OOM-kills it) stops being retried
PARENT_WATCH_INTERVAL_S = 1.0  # how often a job checks that the worker that forked it is still alive

# Locks (Redis, seconds): the plan of a run and its summary file are written by one job at a time.
PLAN_LOCK_TIMEOUT = 300
SUMMARY_LOCK_TIMEOUT = 120
SUBMIT_LOCK_TIMEOUT = 30  # submitting one study (the plan job is created at most once)
