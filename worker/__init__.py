"""worker: runs lmc_core studies as RQ jobs, one stage per job, on any number of workers (one per GPU).

The package and every module it re-exports below are torch-free, so the API process imports them: `submit`,
`status`, `cancel`, `reconcile`, `liveness` and `abandoned` act on Redis and the run's files; `keys` names what
this layer writes into Redis; `connection` and `runlog` are shared by all of them; `runs` locates a run; `defaults`
holds every setting. `jobs` holds the job functions workers run (it imports torch; RQ finds it by dotted path and
nothing here imports it); `runner` is the RQ worker class; `commands` the `lmc worker` command.
"""

from .abandoned import requeue_abandoned
from .cancel import cancel_study
from .connection import SERIALIZER, connect
from .defaults import DEFAULT_QUEUE
from .keys import PLAN_FUNC, STAGE_FUNC, plan_job_id, stage_job_id
from .liveness import live_workers, queue_summary, reap_dead_workers, worker_alive, workers_per_queue
from .reconcile import reconcile_study
from .runlog import append_log
from .runs import run_dir
from .status import study_status
from .submit import enqueue_stages, submit_study

__all__ = [
    "DEFAULT_QUEUE",
    "PLAN_FUNC",
    "SERIALIZER",
    "STAGE_FUNC",
    "append_log",
    "cancel_study",
    "connect",
    "enqueue_stages",
    "live_workers",
    "plan_job_id",
    "queue_summary",
    "reap_dead_workers",
    "reconcile_study",
    "requeue_abandoned",
    "run_dir",
    "stage_job_id",
    "study_status",
    "submit_study",
    "worker_alive",
    "workers_per_queue",
]
