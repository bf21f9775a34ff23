"""The Celery tasks: thin, named, ids in. Each calls one plain job function and sorts its
failures into retriable (``self.retry`` with exponential backoff) and terminal (the job
ends ``failed`` with the reason). Task names are the contract with the API:

- ``medvec.merge.run(job_id)``, ``medvec.tune.run(job_id)``: run a merge job
- ``medvec.evaluate.run(version_id, benchmark_id, split="test")``: a merge queues it for
  the test split and, where the benchmark has one, the val split
- ``medvec.policy.check(base_id=None)``: the auto-merge policy (beat, and after a vector)
- ``medvec.vectors.accepted(vector_id, base_id, ...)``: the registry's hook → policy check
- ``medvec.sweep.run()``: re-send jobs that lost their message
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from celery import Task
from celery.exceptions import SoftTimeLimitExceeded
from sqlalchemy import select

from app.jobs import VECTOR_ACCEPTED
from app.models import Benchmark, DataVector, Evaluation, MergeJob
from app.services.merges import EVALUATE_TASK, MERGE_TASK, POLICY_TASK, TUNE_TASK
from worker.errors import JobGone, TerminalJobError, describe, is_retriable
from worker.evaluate import benchmarks_for, evaluate_version, mark_evaluation_failed, splits_for
from worker.merge import MergeOutcome, mark_failed, mark_queued, run_merge
from worker.policy import check_policy
from worker.queue import CeleryJobQueue
from worker.session import session_scope
from worker.sweeper import stale_staging_files, sweep
from worker.tune import tune_merge

if TYPE_CHECKING:
    from worker.celery_app import MedVecCelery

log = logging.getLogger(__name__)

SWEEP_TASK = "medvec.sweep.run"

JobFunction = Callable[..., MergeOutcome]


def job_queue(app: MedVecCelery) -> CeleryJobQueue:
    return CeleryJobQueue(app, app.settings.queue)


def _backoff(task: Task, app: MedVecCelery) -> float:
    return app.settings.retry_backoff_s * (2**task.request.retries)


def _retry_or_fail(
    task: Task, app: MedVecCelery, exc: Exception, on_fail: Callable[[str], None]
) -> None:
    """Retry a transient failure with backoff while retries remain; otherwise record it."""
    if is_retriable(exc) and task.request.retries < app.settings.max_retries:
        log.warning("%s: transient failure, retrying: %s", task.name, describe(exc))
        raise task.retry(exc=exc, countdown=_backoff(task, app))
    log.error("%s failed: %s", task.name, describe(exc), exc_info=exc)
    on_fail(describe(exc))


def _run_job(task: Task, app: MedVecCelery, job_id: str, function: JobFunction) -> str | None:
    res, settings = app.resources, app.settings
    try:
        outcome = function(res.sessions, res.store, job_id, settings)
    except JobGone as exc:
        log.warning("%s: %s; dropping the task", task.name, exc)
        return None
    except SoftTimeLimitExceeded:
        limit = task.soft_time_limit or settings.merge_soft_time_limit_s
        mark_failed(res.sessions, job_id, f"{task.name} exceeded its time limit of {limit} s")
        return None
    except TerminalJobError as exc:
        mark_failed(res.sessions, job_id, describe(exc))
        return None
    except Exception as exc:
        if is_retriable(exc):
            reason = describe(exc)
            _safely(lambda: mark_queued(res.sessions, job_id, reason))
        _retry_or_fail(task, app, exc, lambda reason: mark_failed(res.sessions, job_id, reason))
        return None
    if outcome.version_id:
        _queue_evaluations(app, outcome.version_id, job_id)
    return outcome.version_id


def _queue_evaluations(app: MedVecCelery, version_id: str, job_id: str) -> None:
    """Queue the version's test and val evaluations that do not exist yet (a redelivered
    task thus repairs a crash between the version's commit and this send; a tuned
    version already has its val row)."""
    with session_scope(app.resources.sessions) as session:
        job = session.get(MergeJob, job_id)
        benchmark_id = job.benchmark_id if job is not None else None
        rows = session.execute(
            select(Evaluation.benchmark_id, Evaluation.split).where(
                Evaluation.version_id == version_id
            )
        )
        existing = {(benchmark, split) for benchmark, split in rows}
        wanted = [
            session.get(Benchmark, b) for b in benchmarks_for(session, version_id, benchmark_id)
        ]
        missing = [
            (benchmark.id, split)
            for benchmark in wanted
            if benchmark is not None
            for split in splits_for(benchmark)
            if (benchmark.id, split) not in existing
        ]
    queue = job_queue(app)
    for benchmark, split in missing:
        payload = {"version_id": version_id, "benchmark_id": benchmark, "split": split}
        queue.enqueue(EVALUATE_TASK, payload)


def _safely(action: Callable[[], None]) -> None:
    try:
        action()
    except Exception:  # the database may be what is down; the retry will tell
        log.exception("could not record the job's state")


def register_tasks(app: MedVecCelery) -> None:
    """Declare every MedVec task on ``app`` (called by ``make_celery``)."""

    @app.task(name=MERGE_TASK, bind=True)
    def merge_run(self: Task, job_id: str) -> str | None:
        return _run_job(self, app, job_id, run_merge)

    conf = app.settings
    eval_limits = {
        "soft_time_limit": conf.eval_soft_time_limit_s,
        "time_limit": conf.eval_time_limit_s,
    }
    tune_limits = {
        "soft_time_limit": conf.tune_soft_time_limit_s,
        "time_limit": conf.tune_time_limit_s,
    }

    @app.task(name=TUNE_TASK, bind=True, **tune_limits)
    def tune_run(self: Task, job_id: str) -> str | None:
        return _run_job(self, app, job_id, tune_merge)

    @app.task(name=EVALUATE_TASK, bind=True, **eval_limits)
    def evaluate_run(
        self: Task, version_id: str, benchmark_id: str, split: str = "test"
    ) -> dict[str, Any] | None:
        res = app.resources

        def failed(reason: str) -> None:
            mark_evaluation_failed(res.sessions, version_id, benchmark_id, split, reason)

        try:
            return evaluate_version(
                res.sessions, res.store, version_id, benchmark_id, app.settings, split
            )
        except JobGone as exc:
            log.warning("%s: %s; dropping the task", self.name, exc)
        except Exception as exc:
            _retry_or_fail(self, app, exc, failed)
        return None

    @app.task(name=POLICY_TASK, ignore_result=False)
    def policy_check(base_id: str | None = None) -> list[str]:
        with session_scope(app.resources.sessions, job_queue(app)) as session:
            return check_policy(session, app.settings, base_id=base_id)

    @app.task(name=VECTOR_ACCEPTED)
    def vector_accepted(vector_id: str, **_payload: Any) -> list[str]:
        with session_scope(app.resources.sessions, job_queue(app)) as session:
            vector = session.get(DataVector, vector_id)
            if vector is None:
                return []
            return check_policy(session, app.settings, base_id=vector.base_id)

    @app.task(name=SWEEP_TASK)
    def sweep_run() -> list[str]:
        with session_scope(app.resources.sessions, job_queue(app)) as session:
            resent = sweep(session, app.settings)
            removed = stale_staging_files(session, app.resources.store, app.settings)
        if removed:
            log.info("sweeper: removed %d stale staging files: %s", len(removed), removed[:10])
        return resent
