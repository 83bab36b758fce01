"""The names this layer writes into Redis: its own keys, the RQ job ids of a study, and the job functions' dotted paths.

Redis state besides RQ's (whose keys start with "rq:"): `lmc:study:<id>` (run id, queue, artifact root, cancel flag),
`lmc:run:<run>:studies` (the active studies sharing a run), `lmc:run:<run>:jobs` (its stage job ids),
`lmc:log:<run>` (log tail), `lmc:worker:<name>` (a worker's GPU and threads), and the locks and counters below.
"""

from __future__ import annotations

import hashlib
import re

KEY_PREFIX = "lmc"

# The job functions, named by dotted path so the API process that enqueues them never imports torch.
PLAN_FUNC = "worker.jobs.plan_study"
STAGE_FUNC = "worker.jobs.run_stage"
JOB_FUNCS = (PLAN_FUNC, STAGE_FUNC)

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


# ---- RQ job ids -----------------------------------------------------------------------------------
def _safe(text: str, limit: int) -> str:
    """Return `text` in RQ's job-id alphabet (letters, digits, _ and -), with a hash so distinct texts stay distinct."""
    cleaned = _UNSAFE.sub("_", text).strip("_")[:limit]
    if cleaned == text:
        return text
    return f"{cleaned}-{hashlib.sha1(text.encode()).hexdigest()[:10]}"


def plan_job_id(study_id: str) -> str:
    """Return the RQ job id of a study's plan job."""
    return f"lmc-plan-{_safe(study_id, 64)}"


def stage_job_id(run_id: str, stage_key: str) -> str:
    """Return the RQ job id of one stage of a run: readable, valid for RQ 3, and the same for every study of that run."""
    return f"lmc-{_safe(run_id, 32)}-{_safe(stage_key, 80)}"


# ---- Redis keys -----------------------------------------------------------------------------------
def study_key(study_id: str) -> str:
    """Return the Redis hash holding a study's run id, queue, artifact root and cancel flag."""
    return f"{KEY_PREFIX}:study:{study_id}"


def run_studies_key(run_id: str) -> str:
    """Return the Redis set of the active studies sharing run `run_id`'s stage jobs."""
    return f"{KEY_PREFIX}:run:{run_id}:studies"


def run_jobs_key(run_id: str) -> str:
    """Return the Redis set of a run's stage job ids (what cancel_study cancels)."""
    return f"{KEY_PREFIX}:run:{run_id}:jobs"


def log_key(run_id: str) -> str:
    """Return the Redis list holding a run's log tail."""
    return f"{KEY_PREFIX}:log:{run_id}"


def submit_lock_key(study_id: str) -> str:
    """Return the Redis lock serialising submissions of one study, so its plan job is created once."""
    return f"{KEY_PREFIX}:submit:{study_id}"


def plan_lock_key(run_id: str) -> str:
    """Return the Redis lock serialising plan jobs (and cancellation) of one run."""
    return f"{KEY_PREFIX}:plan:{run_id}"


def summary_lock_key(run_id: str) -> str:
    """Return the Redis lock under which a run's summary file is rewritten."""
    return f"{KEY_PREFIX}:summary:{run_id}"


def abandoned_key(job_id: str) -> str:
    """Return the Redis counter of how often a job was requeued after its worker died."""
    return f"{KEY_PREFIX}:abandoned:{job_id}"


def failed_scan_key(queue: str) -> str:
    """Return the Redis cursor (a failed-registry score) up to which a queue's failed jobs were checked for abandonment."""
    return f"{KEY_PREFIX}:failed-scan:{queue}"


def worker_info_key(name: str) -> str:
    """Return the Redis hash holding what RQ does not record about a worker: its GPU and thread count."""
    return f"{KEY_PREFIX}:worker:{name}"
