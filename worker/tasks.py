"""The Celery tasks: thin, named, ids in. Each calls one plain job function and sorts its
failures into retriable (``self.retry`` with exponential backoff) and terminal (the job
ends ``failed`` with the reason). Every task that runs a model gets the process's
``Evaluator`` (``WorkerResources.evaluator``). Task names are the contract with the API:

- ``medvec.merge.run(job_id)``, ``medvec.tune.run(job_id)``: run a merge job (the merge
  task is ``worker.runner``'s, torch-free, so that ``worker.merge_main`` can serve it alone)
- ``medvec.merge.finish(job_id, merged_sha256, ...)``: recalibrate and record a merge the
  merge queue wrote (``MEDVEC_MERGE_QUEUE``)
- ``medvec.secure.merge(job_id)``: run a secure merge job (shares summed by two servers)
- ``medvec.evaluate.run(version_id, benchmark_id, split="test")``: a merge queues it for
  the test split and, where the benchmark has one, the val split; then the
  auto-promotion policy (``worker.promotion``)
- ``medvec.policy.check(base_id=None)``: the auto-merge policy (beat, and after a vector)
- ``medvec.vectors.accepted(vector_id, base_id, ...)``: the registry's hook → screening
  (``worker.screen``), then the running sums update (``MEDVEC_RUNNING_SUMS``), then the
  policy check
- ``medvec.bases.verify(base_id)``: check a new base's tensors against its architecture
- ``medvec.contributions.run(version_id)``: each input hospital's leave-one-out contribution
- ``medvec.sweep.run()``: re-send jobs and evaluations that lost their message or worker,
  and (``MEDVEC_RUNNING_SUMS``) compare running sums with a full recompute once a period
"""

from __future__ import annotations

import logging
from functools import partial
from typing import TYPE_CHECKING, Any

from celery import Task

from app.jobs import SUMS_REFRESH, VECTOR_ACCEPTED
from app.models import DataVector
from app.services.bases import VERIFY_TASK
from app.services.contributions import CONTRIBUTIONS_TASK
from app.services.evaluation_runs import EVALUATE_TASK
from app.services.merges import MERGE_FINISH_TASK, POLICY_TASK, SECURE_MERGE_TASK, TUNE_TASK
from worker.bases import verify_base
from worker.contributions import compute_contributions
from worker.errors import JobGone, TerminalJobError, describe, is_retriable
from worker.evaluate import (
    evaluate_version,
    mark_evaluation_failed,
    mark_evaluation_queued,
)
from worker.merge import finish_merge
from worker.policy import check_policy
from worker.promotion import auto_promote
from worker.runner import (
    eval_limits_of,
    job_queue,
    register_merge_task,
    retry_or_fail,
    run_job,
    safely,
)
from worker.screen import mark_screening_failed, screen_vector
from worker.secure_merge import run_secure_merge
from worker.session import session_scope
from worker.sums import check_sums, refresh_sums
from worker.sweeper import orphan_blobs, stale_staging_files, sums_due, sweep
from worker.tune import tune_merge

if TYPE_CHECKING:
    from worker.celery_app import MedVecCelery

log = logging.getLogger(__name__)

SWEEP_TASK = "medvec.sweep.run"


def register_tasks(app: MedVecCelery) -> None:
    """Declare every MedVec task on ``app`` (called by ``make_celery``)."""

    register_merge_task(app)

    @app.task(name=MERGE_FINISH_TASK, bind=True, **eval_limits_of(app))
    def merge_finish(
        self: Task,
        job_id: str,
        merged_sha256: str,
        cosine: float | None = None,
        from_sums: bool = False,
    ) -> str | None:
        finishing = partial(
            finish_merge,
            evaluator=app.resources.evaluator,
            merged_sha256=merged_sha256,
            cosine=cosine,
            from_sums=from_sums,
        )
        return run_job(self, app, job_id, finishing)

    @app.task(name=SECURE_MERGE_TASK, bind=True)
    def secure_merge_run(self: Task, job_id: str) -> str | None:
        securing = partial(run_secure_merge, evaluator=app.resources.evaluator)
        return run_job(self, app, job_id, securing)

    conf = app.settings
    eval_limits = eval_limits_of(app)

    @app.task(
        name=TUNE_TASK,
        bind=True,
        soft_time_limit=conf.tune_soft_time_limit_s,
        time_limit=conf.tune_time_limit_s,
    )
    def tune_run(self: Task, job_id: str) -> str | None:
        tuning = partial(tune_merge, evaluator=app.resources.evaluator)
        return run_job(self, app, job_id, tuning)

    @app.task(name=EVALUATE_TASK, bind=True, **eval_limits)
    def evaluate_run(
        self: Task, version_id: str, benchmark_id: str, split: str = "test"
    ) -> dict[str, Any] | None:
        res = app.resources

        def failed(reason: str) -> None:
            mark_evaluation_failed(res.sessions, version_id, benchmark_id, split, reason)

        try:
            metrics = evaluate_version(
                res.sessions,
                res.store,
                res.evaluator,
                version_id,
                benchmark_id,
                app.settings,
                split,
            )
        except JobGone as exc:
            log.warning("%s: %s; dropping the task", self.name, exc)
            return None
        except Exception as exc:
            if is_retriable(exc):
                reason = describe(exc)
                safely(
                    lambda: mark_evaluation_queued(
                        res.sessions, version_id, benchmark_id, split, reason
                    )
                )
            retry_or_fail(self, app, exc, failed)
            return None
        safely(lambda: auto_promote(res.sessions, version_id, app.settings))
        return metrics

    @app.task(name=POLICY_TASK, ignore_result=False)
    def policy_check(base_id: str | None = None) -> list[str]:
        with session_scope(app.resources.sessions, job_queue(app)) as session:
            return check_policy(session, app.settings, base_id=base_id)

    @app.task(name=VECTOR_ACCEPTED, bind=True, **eval_limits)
    def vector_accepted(self: Task, vector_id: str, **_payload: Any) -> list[str]:
        res = app.resources
        try:
            screen_vector(res.sessions, res.store, vector_id, app.settings, res.evaluator)
        except JobGone as exc:
            log.warning("%s: %s; dropping the task", self.name, exc)
            return []
        except Exception as exc:
            retry_or_fail(
                self, app, exc, lambda why: mark_screening_failed(res.sessions, vector_id, why)
            )
        with session_scope(res.sessions) as session:
            vector = session.get(DataVector, vector_id)
            base_id = vector.base_id if vector is not None else None
        if base_id is None:
            return []
        if app.settings.running_sums:  # first, so that an auto-merge finds them current
            refresh_sums(res.sessions, res.store, base_id)
        with session_scope(res.sessions, job_queue(app)) as session:
            return check_policy(session, app.settings, base_id=base_id)

    @app.task(name=SUMS_REFRESH)
    def sums_refresh(base_id: str) -> list[str]:
        """A hospital left: its share comes out of ``base_id``'s running sums."""
        if not app.settings.running_sums:
            return []
        return refresh_sums(app.resources.sessions, app.resources.store, base_id)

    @app.task(name=CONTRIBUTIONS_TASK, bind=True, **eval_limits)
    def contributions_run(self: Task, version_id: str) -> dict[str, Any] | None:
        res = app.resources
        try:
            return compute_contributions(
                res.sessions, res.store, res.evaluator, version_id, app.settings
            )
        except (JobGone, TerminalJobError) as exc:
            log.warning("%s: %s", self.name, exc)
            return None

    @app.task(name=VERIFY_TASK)
    def base_verify(base_id: str) -> str | None:
        with session_scope(app.resources.sessions, job_queue(app)) as session:
            status = verify_base(session, app.resources.store, base_id)
        return None if status is None else status.value

    @app.task(name=SWEEP_TASK)
    def sweep_run() -> list[str]:
        with session_scope(app.resources.sessions, job_queue(app)) as session:
            resent = sweep(session, app.settings)
            removed = stale_staging_files(session, app.resources.store, app.settings)
            orphans = orphan_blobs(session, app.resources.store, app.settings)
            due = (
                sums_due(session, app.settings.sums_check_every_s)
                if app.settings.running_sums
                else []
            )
        for base_id in due:
            check_sums(app.resources.sessions, app.resources.store, base_id)
        if removed:
            log.info("sweeper: removed %d stale staging files: %s", len(removed), removed[:10])
        if orphans:
            log.info("sweeper: removed %d orphan blobs: %s", len(orphans), orphans[:10])
        return resent
