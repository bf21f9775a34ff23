"""How a task runs a job, torch-free: shared by every worker app, including the merge-only
one (``worker.merge_main``), which registers nothing but ``medvec.merge.run``.

Each task calls one plain job function and sorts its failures into retriable
(``self.retry`` with exponential backoff) and terminal (the job ends ``failed`` with the
reason).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from celery import Task
from celery.exceptions import SoftTimeLimitExceeded

from app.metrics import JOB_FAILURES, JOB_RETRIES
from app.models import Benchmark, MergeJob
from app.services.evaluation_runs import queue_missing
from app.tasks import MergeRun
from worker.errors import HolderUnavailable, JobGone, TerminalJobError, describe, is_retriable
from worker.merge import MergeOutcome, run_merge
from worker.merge_jobs import mark_failed, mark_queued, mark_waiting
from worker.queue import CeleryJobQueue, task_routes
from worker.session import session_scope

if TYPE_CHECKING:
    from worker.celery_app import MedVecCelery

log = logging.getLogger(__name__)

JobFunction = Callable[..., MergeOutcome]


def eval_limits_of(app: MedVecCelery) -> dict[str, Any]:
    """The time limits of evaluation-sized tasks."""
    return {
        "soft_time_limit": app.settings.eval_soft_time_limit_s,
        "time_limit": app.settings.eval_time_limit_s,
    }


def job_queue(app: MedVecCelery) -> CeleryJobQueue:
    return CeleryJobQueue(app, app.settings.queue, task_routes(app.settings))


def backoff(task: Task, app: MedVecCelery) -> float:
    return app.settings.retry_backoff_s * (2**task.request.retries)


def retry_or_fail(
    task: Task, app: MedVecCelery, exc: Exception, on_fail: Callable[[str], None]
) -> None:
    """Retry a transient failure with backoff while retries remain; otherwise record it."""
    if is_retriable(exc) and task.request.retries < app.settings.max_retries:
        log.warning("%s: transient failure, retrying: %s", task.name, describe(exc))
        JOB_RETRIES.labels(task=task.name).inc()
        raise task.retry(exc=exc, countdown=backoff(task, app))
    log.error("%s failed: %s", task.name, describe(exc), exc_info=exc)
    JOB_FAILURES.labels(task=task.name).inc()
    on_fail(describe(exc))


def run_job(task: Task, app: MedVecCelery, job_id: str, function: JobFunction) -> str | None:
    res, settings = app.resources, app.settings
    try:
        outcome = function(res.sessions, res.store, job_id, settings)
    except JobGone as exc:
        log.warning("%s: %s; dropping the task", task.name, exc)
        return None
    except SoftTimeLimitExceeded:
        limit = task.soft_time_limit or settings.merge_soft_time_limit_s
        JOB_FAILURES.labels(task=task.name).inc()
        mark_failed(res.sessions, job_id, f"{task.name} exceeded its time limit of {limit} s")
        return None
    except TerminalJobError as exc:
        JOB_FAILURES.labels(task=task.name).inc()
        mark_failed(res.sessions, job_id, describe(exc))
        return None
    except HolderUnavailable as exc:
        wait_for_holder(task, app, job_id, exc)
        return None
    except Exception as exc:
        if is_retriable(exc):
            reason = describe(exc)
            safely(lambda: mark_queued(res.sessions, job_id, reason))
        retry_or_fail(task, app, exc, lambda reason: mark_failed(res.sessions, job_id, reason))
        return None
    if outcome.version_id:
        queue_evaluations(app, outcome.version_id, job_id)
    return outcome.version_id


def wait_for_holder(task: Task, app: MedVecCelery, job_id: str, exc: HolderUnavailable) -> None:
    """Send the job again for when the share holder may be back, and free the worker
    meanwhile: no retry budget (a fresh message, not ``task.retry``), a delay that grows
    to ``share_holder_retry_max_s``, the job ``queued`` until then (``mark_waiting``)."""
    settings = app.settings
    log.warning("%s: %s", task.name, exc)
    try:
        delay = mark_waiting(
            app.resources.sessions,
            job_id,
            str(exc),
            first_s=settings.share_holder_retry_s,
            longest_s=settings.share_holder_retry_max_s,
        )
    except Exception:  # the database is out of reach too: the next try will tell
        log.exception("could not record that job %s waits for the share holder", job_id)
        delay = settings.share_holder_retry_s
    if delay is None:
        return
    JOB_RETRIES.labels(task=task.name).inc()
    request = task.request
    task.apply_async(
        args=tuple(request.args or ()), kwargs=dict(request.kwargs or {}), countdown=delay
    )


def queue_evaluations(app: MedVecCelery, version_id: str, job_id: str) -> None:
    """Queue the version's test and val evaluations that have no row yet (a redelivered
    task thus repairs a crash between the version's commit and this call; a merge with
    a benchmark already stored its val row)."""
    from worker.evaluate import benchmarks_for  # torch: only a worker that made a version

    with session_scope(app.resources.sessions, job_queue(app)) as session:
        job = session.get(MergeJob, job_id)
        benchmark_id = job.benchmark_id if job is not None else None
        wanted = [
            session.get(Benchmark, b) for b in benchmarks_for(session, version_id, benchmark_id)
        ]
        queue_missing(session, version_id, [b for b in wanted if b is not None])


def safely(action: Callable[[], object]) -> None:
    try:
        action()
    except Exception:  # the database may be what is down; the retry will tell
        log.exception("could not record the job's state")


def register_merge_task(app: MedVecCelery) -> None:
    """Declare ``medvec.merge.run`` on ``app``."""

    @app.task(name=MergeRun.name, bind=True)
    def merge_run(self: Task, /, **payload: Any) -> str | None:
        def merging(sessions: Any, store: Any, job: str, settings: Any) -> MergeOutcome:
            # the evaluator (torch) is built only where the merge is completed: never on
            # the merge-only worker
            return run_merge(
                sessions,
                store,
                job,
                settings,
                job_queue(app),
                evaluator=lambda: app.resources.evaluator,
            )

        return run_job(self, app, MergeRun(**payload).job_id, merging)
