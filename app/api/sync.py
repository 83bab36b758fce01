"""The sync task: the API process is the only SQL writer, so it mirrors Redis and the artifact root into the database.

Each tick: (1) when Redis is new to us (first contact, or its server run id changed: a restart, possibly empty)
or every `RECONCILE_EVERY_S`, requeue jobs of dead workers and resubmit unfinished studies that lost their jobs,
each on its own queue; (2) submit studies Redis never accepted (it was down when they were created); (3) copy each
active study's status, stage jobs, progress (with an ETA from finished-stage durations and the live workers on its
queue), summary tables, key results and new artifacts into the database. The first tick of a process also fills
what rows older than a column lack (queue, key results), which needs no Redis.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from datetime import datetime, timedelta
from typing import Any, cast

import redis
from sqlalchemy import CursorResult, select, update
from sqlalchemy.orm import Session, sessionmaker

from worker import reconcile_study, requeue_abandoned, study_status, submit_study, workers_per_queue

from . import artifacts, key_results, progress, results
from .jsonsafe import jsonsafe
from .models import ACTIVE_STATES, Job, Study, utcnow
from .settings import Settings
from .submission import REDIS_DOWN

log = logging.getLogger("lmc.api.sync")

RECONCILE_EVERY_S = 60.0
LOG_TAIL = 50  # lines of the run's log kept with the study's progress
TERMINAL = ("finished", "failed", "cancelled")
SETTLE_S = 300.0  # keep refreshing a finished study's summary this long: the worker rewrites summary.json after the last stage.json


def _when(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None


def _int(value: Any) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _float(value: Any) -> float | None:
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None


class Syncer:
    """Mirrors the queue into the store; one per API process (the app's lifespan runs `tick` every sync_interval_s)."""

    def __init__(self, sessions: sessionmaker[Session], conn: redis.Redis, settings: Settings):
        self.sessions = sessions
        self.conn = conn
        self.settings = settings
        self.redis_id: str | None = None  # Redis server run id at the last reconciliation
        self.last_reconcile = 0.0
        self.redis_ok: bool | None = None
        self._seen: dict[str, str] = {}  # study id -> digest of the last mirrored status, to skip identical writes
        self._upgraded = False  # rows older than the queue and key-result columns have been filled

    def queue_of(self, study: Study) -> str:
        """Return the queue a study's jobs go to: its own, or LMC_QUEUE for rows that predate the choice."""
        return study.queue or self.settings.queue

    # ---- the tick -------------------------------------------------------------------------------------------
    def tick(self) -> dict[str, Any]:
        """Return what one round of reconciliation, submission and mirroring did; Redis outages are logged, not raised."""
        report: dict[str, Any] = {"redis": True, "reconciled": None, "submitted": [], "mirrored": 0}
        if not self._upgraded:
            try:
                report["upgraded"] = self.upgrade_rows()
                self._upgraded = True
            except Exception:  # the store may be briefly unreachable at start-up: try again next tick
                log.exception("could not fill the queue and key results of older studies; retrying next tick")
        try:
            server = str(self.conn.info("server").get("run_id"))
            if server != self.redis_id or time.monotonic() - self.last_reconcile > RECONCILE_EVERY_S:
                report["reconciled"] = self.reconcile()
                self.redis_id = server
            report["submitted"] = self.submit_pending()
            report["mirrored"] = self.mirror()
            if self.redis_ok is False:
                log.info("Redis answers again")
            self.redis_ok = True
        except REDIS_DOWN as err:
            report["redis"] = False
            if self.redis_ok is not False:
                log.warning("Redis is not reachable (%s); studies stay recorded and are reconciled when it is back", err)
            self.redis_ok = False
        return report

    def upgrade_rows(self) -> dict[str, int]:
        """Return how many older studies got their queue (LMC_QUEUE, where they were submitted) and key results filled."""
        with self.sessions() as session:
            queued = cast(
                CursorResult[Any], session.execute(update(Study).where(Study.queue.is_(None)).values(queue=self.settings.queue))
            ).rowcount
            session.commit()
            filled = key_results.backfill(session)
        return {"queue": queued or 0, "key_results": filled}

    # ---- reconciliation -------------------------------------------------------------------------------------
    def _active(self, session: Session) -> list[Study]:
        return list(session.scalars(select(Study).where(Study.status.in_(ACTIVE_STATES)).order_by(Study.created_at)))

    def reconcile(self) -> dict[str, Any]:
        """Return {requeued, resubmitted}: jobs of dead workers requeued and unfinished studies resubmitted to Redis."""
        requeued = requeue_abandoned(self.conn)
        resubmitted = []
        with self.sessions() as session:
            for study in self._active(session):
                try:
                    if study.submitted:
                        job_id = reconcile_study(
                            self.conn, study.id, study.config, study.run_id, str(self.settings.artifact_root), self.queue_of(study)
                        )
                    else:
                        job_id = submit_study(self.conn, study.id, study.config, str(self.settings.artifact_root), self.queue_of(study))
                except REDIS_DOWN:
                    raise
                except Exception:  # e.g. a damaged stages.json: reconcile the other studies anyway
                    log.exception("could not reconcile study %s", study.id)
                    continue
                if job_id is not None:
                    self._mark_submitted(session, study.id, job_id)
                    resubmitted.append(study.id)
        self.last_reconcile = time.monotonic()
        if requeued or resubmitted:
            log.info("reconciled: requeued %d job(s) of dead workers, resubmitted %d studies", len(requeued), len(resubmitted))
        return {"requeued": requeued, "resubmitted": resubmitted}

    def _mark_submitted(self, session: Session, study_id: str, job_id: str) -> None:
        # Conditional: a study cancelled meanwhile keeps its state.
        session.execute(
            update(Study).where(Study.id == study_id, Study.status.in_(ACTIVE_STATES)).values(submitted=True, plan_job_id=job_id)
        )
        session.commit()

    def submit_pending(self) -> list[str]:
        """Return the ids of active studies Redis had not accepted yet, now submitted."""
        done = []
        with self.sessions() as session:
            pending = session.scalars(select(Study).where(Study.status.in_(ACTIVE_STATES), Study.submitted.is_(False))).all()
            for study in pending:
                job_id = submit_study(self.conn, study.id, study.config, str(self.settings.artifact_root), self.queue_of(study))
                self._mark_submitted(session, study.id, job_id)
                done.append(study.id)
        return done

    # ---- mirroring ------------------------------------------------------------------------------------------
    def mirror(self) -> int:
        """Return how many active studies changed after copying their queue status into the database."""
        changed = 0
        with self.sessions() as session:
            studies = session.scalars(select(Study).where(Study.status.in_(ACTIVE_STATES), Study.submitted.is_(True))).all()
            workers = workers_per_queue(self.conn) if studies else {}  # once per tick: it reads every worker's key
            for study in studies:
                try:
                    status = study_status(self.conn, study.id, study.run_id, str(self.settings.artifact_root))
                    changed += self.apply(session, study, status, workers.get(self.queue_of(study), 0))
                except REDIS_DOWN:
                    raise
                except Exception:  # one study's damaged files must not stop the others from being mirrored
                    session.rollback()
                    log.exception("could not mirror study %s", study.id)
            self.settle(session)
        return changed

    def settle(self, session: Session) -> None:
        """Refresh the summary and artifacts of studies that ended in the last SETTLE_S seconds (files may trail the state)."""
        since = utcnow() - timedelta(seconds=SETTLE_S)
        recent = session.scalars(select(Study).where(Study.status.in_(("finished", "failed")), Study.finished_at >= since)).all()
        for study in recent:
            summary = results.read_summary(self.settings, study.run_id)
            if summary is not None:
                results.store_summary(session, study, summary)
            done = session.scalars(select(Job.key).where(Job.study_id == study.id, Job.status == "done")).all()
            artifacts.scan(session, self.settings, study.run_id, done)
        session.commit()

    def apply(self, session: Session, study: Study, status: dict[str, Any], workers: int | None = None) -> bool:
        """Write one study's status (state, stage jobs, progress, summary, artifacts) into the database; return True if it changed.

        `workers`: live workers on the study's queue (counted here when None), for the ETA.
        """
        if workers is None:
            workers = workers_per_queue(self.conn).get(self.queue_of(study), 0)
        digest = hashlib.sha256(json.dumps([status, workers], sort_keys=True, default=str).encode()).hexdigest()
        if self._seen.get(study.id) == digest:
            return False
        stages = status.get("stages") or []
        self._jobs(session, study.id, stages)
        state = status.get("state") or study.status
        failed = [s for s in stages if s.get("status") in ("failed", "stopped")]
        plan = status.get("plan_job") or {}
        error = next((s.get("error") for s in failed if s.get("error")), None) or plan.get("error")
        running = [s for s in stages if s.get("status") == "running"]
        progress_ = {
            "state": state,
            "done": int(status.get("done") or 0),
            "total": int(status.get("total") or 0),
            "counts": status.get("counts") or {},
            "eta_s": progress.estimate_eta(stages, workers) if state in ACTIVE_STATES else None,
            "workers": workers,
            "running": [{k: s.get(k) for k in ("key", "kind", "step", "total", "eta_s", "metrics", "message", "worker")} for s in running],
            "log_tail": [str(x) for x in (status.get("log_tail") or [])][-LOG_TAIL:],
            "updated_at": utcnow().isoformat(),
        }
        values: dict[str, Any] = {
            "status": state,
            "progress": jsonsafe(progress_),
            "stages_done": progress_["done"],
            "stages_total": progress_["total"],
            "error": error if state == "failed" else None,
            "updated_at": utcnow(),
        }
        if state in ("running", *TERMINAL) and study.started_at is None:
            values["started_at"] = utcnow()
        if state in TERMINAL:
            values["finished_at"] = utcnow()
        # Conditional on the study still being active, so a cancel committed meanwhile is not overwritten.
        res = cast(
            CursorResult[Any], session.execute(update(Study).where(Study.id == study.id, Study.status.in_(ACTIVE_STATES)).values(**values))
        )
        summary = results.read_summary(self.settings, study.run_id)
        if summary is not None:
            results.store_summary(session, study, summary)
        artifacts.scan(session, self.settings, study.run_id, [s["key"] for s in stages if s.get("status") == "done"])
        session.commit()
        self._seen[study.id] = digest
        if state in TERMINAL:
            self._seen.pop(study.id, None)
        return bool(res.rowcount)

    def _jobs(self, session: Session, study_id: str, stages: list[dict[str, Any]]) -> None:
        existing = {j.key: j for j in session.scalars(select(Job).where(Job.study_id == study_id))}
        for s in stages:
            key = str(s.get("key"))
            job = existing.get(key)
            if job is None:
                job = Job(study_id=study_id, key=key[:255], kind=str(s.get("kind") or "")[:32], status="pending")
                session.add(job)
                existing[key] = job
            job.status = str(s.get("status") or "pending")[:16]
            job.step, job.total, job.eta_s = _int(s.get("step")), _int(s.get("total")), _float(s.get("eta_s"))
            job.metrics = jsonsafe(s.get("metrics") or {})
            job.message = s.get("message") or None
            job.error = s.get("error") or None
            job.worker = (s.get("worker") or None) and str(s["worker"])[:255]
            job.started_at, job.ended_at = _when(s.get("started_at")), _when(s.get("ended_at"))
