"""`lmc worker`: one RQ worker process (one per GPU) that runs study jobs.

Registered by app/cli.py. Pins the GPU and thread count through the environment before torch is imported,
then imports torch and lmc_core once in this parent process, so every job RQ forks starts with them loaded
(a fresh `import torch` costs 1.5-2.5 s per job on the team's CPUs).
"""

from __future__ import annotations

import argparse
import os
import sys

from . import defaults


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `worker` subcommand to `sub`."""
    p = sub.add_parser(
        "worker",
        help="run an RQ worker for study jobs (one per GPU)",
        description="Run study stages from the Redis queue. Timing knobs come from the environment: "
        "LMC_WORKER_TTL, LMC_JOB_MONITORING_INTERVAL, LMC_WORKER_DEAD_AFTER, LMC_MAINTENANCE_INTERVAL.",
    )
    p.add_argument(
        "--queues",
        nargs="+",
        default=[defaults.DEFAULT_QUEUE],
        metavar="QUEUE",
        help=f"queues to listen on, highest priority first (default: {defaults.DEFAULT_QUEUE})",
    )
    p.add_argument("--gpu", default=None, metavar="N", help="the GPU this worker owns: sets CUDA_VISIBLE_DEVICES=N before torch loads")
    p.add_argument("--url", default=None, help=f"Redis URL (default: $LMC_REDIS_URL or {defaults.REDIS_URL})")
    p.add_argument(
        "--artifact-root",
        default=None,
        help="where this machine sees the shared artifact root (default: $LMC_ARTIFACT_ROOT, else the path each job carries)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        metavar="N",
        help="CPU threads per job (OMP/MKL); set 1 when several workers share a CPU. Default: torch's own choice",
    )
    p.add_argument("--burst", action="store_true", help="quit when the queues are empty")
    p.add_argument("--name", default=None, help="worker name (default: lmc-<host>[-gpu<N>]-<pid>)")
    p.add_argument("--max-jobs", type=int, default=None, help="quit after this many jobs")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    p.set_defaults(func=cmd_worker)


def cmd_worker(args: argparse.Namespace) -> int:
    """Run the worker until it is stopped (or, with --burst, until the queues are empty); return the exit code."""
    if args.gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(args.gpu)
    if args.threads is not None:
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = str(args.threads)
    if args.artifact_root:
        os.environ["LMC_ARTIFACT_ROOT"] = os.path.abspath(args.artifact_root)
    if "torch" in sys.modules and (args.gpu is not None or args.threads is not None):
        print("lmc worker: torch was imported before --gpu/--threads could take effect", file=sys.stderr)
    # The parent must never touch CUDA (a forked child cannot re-initialise it); importing torch does not.
    import torch  # noqa: F401  (preload for the forked jobs)
    from rq.worker import Worker

    import worker.jobs  # noqa: F401  (preloads lmc_core's run store and its dependencies likewise)

    from .connection import connect
    from .liveness import worker_alive
    from .runner import make_worker

    conn = connect(args.url)
    key = Worker.redis_worker_namespace_prefix + (args.name or "")
    if args.name and conn.exists(key) and not worker_alive(conn, args.name):
        # A previous worker of this name died without deregistering; RQ would refuse the name until its key expires.
        conn.delete(key)
    w = make_worker(conn, args.queues, name=args.name, gpu=args.gpu, threads=args.threads)
    # Maintenance (ours: requeue abandoned jobs) runs at start and every LMC_MAINTENANCE_INTERVAL seconds.
    w.work(burst=args.burst, logging_level=args.log_level, max_jobs=args.max_jobs)
    return 0
