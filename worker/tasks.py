"""The Celery tasks: thin, named, ids in. Each calls one plain job function and sorts its
failures into retriable (``self.retry`` with exponential backoff) and terminal (the job
ends ``failed`` with the reason). Every task that runs a model gets the process's
``Evaluator`` (``WorkerResources.evaluator``). Each validates its payload with the task's
model in ``app.tasks``, the one list of names and payloads:

- ``medvec.merge.run(job_id)``, ``medvec.tune.run(job_id)``: run a merge job (the merge
  task is ``worker.runner``'s, torch-free, so that ``worker.merge_main`` can serve it alone)
- ``medvec.merge.finish(job_id, merged_sha256, ...)``: recalibrate and record a merge the
  merge queue wrote (``MEDVEC_MERGE_QUEUE``)
- ``medvec.secure.merge(job_id)``: run a secure merge job (shares summed by two servers)
- ``medvec.evaluate.run(version_id, benchmark_id, split="test")``: a merge queues it for
  the test split and, where the benchmark has one, the val split; then the
  auto-promotion policy (``worker.promotion``)
- ``medvec.policy.check(base_id=None)``: the auto-merge policy (beat, and after a vector)
- ``medvec.vectors.accepted(vector_id)``: the registry's hook → screening
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

from app.models import DataVector
from app.tasks import (
    BaseVerify,
    ContributionsRun,
    EvaluateRun,
    MergeFinish,
    PolicyCheck,
    SecureMergeRun,
    SumsRefresh,
    SweepRun,
    TuneRun,
    VectorAccepted,
)
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


def register_tasks(app: MedVecCelery) -> None:
    """Declare every MedVec task on ``app`` (called by ``make_celery``)."""
    register_merge_task(app)
    _register_merge_jobs(app)
    _register_evaluation(app)
    _register_vector_pipeline(app)
    _register_upkeep(app)


def _register_merge_jobs(app: MedVecCelery) -> None:
    """The merge queue's finishing half, secure merges and tuned merges."""

    @app.task(name=MergeFinish.name, bind=True, **eval_limits_of(app))
    def merge_finish(self: Task, /, **payload: Any) -> str | None:
        task = MergeFinish(**payload)
        finishing = partial(
            finish_merge,
            evaluator=app.resources.evaluator,
            merged_sha256=task.merged_sha256,
            cosine=task.cosine,
            from_sums=task.from_sums,
        )
        return run_job(self, app, task.job_id, finishing)

    @app.task(name=SecureMergeRun.name, bind=True)
    def secure_merge_run(self: Task, /, **payload: Any) -> str | None:
        securing = partial(run_secure_merge, evaluator=app.resources.evaluator)
        return run_job(self, app, SecureMergeRun(**payload).job_id, securing)

    conf = app.settings

    @app.task(
        name=TuneRun.name,
        bind=True,
        soft_time_limit=conf.tune_soft_time_limit_s,
        time_limit=conf.tune_time_limit_s,
    )
    def tune_run(self: Task, /, **payload: Any) -> str | None:
        tuning = partial(tune_merge, evaluator=app.resources.evaluator)
        return run_job(self, app, TuneRun(**payload).job_id, tuning)


def _register_evaluation(app: MedVecCelery) -> None:
    """Evaluations (then the auto-promotion policy) and leave-one-out contributions."""

    @app.task(name=EvaluateRun.name, bind=True, **eval_limits_of(app))
    def evaluate_run(self: Task, /, **payload: Any) -> dict[str, Any] | None:
        task = EvaluateRun(**payload)
        res = app.resources
        where = (task.version_id, task.benchmark_id, task.split)

        def failed(reason: str) -> None:
            mark_evaluation_failed(res.sessions, *where, reason)

        try:
            metrics = evaluate_version(
                res.sessions, res.store, res.evaluator, *where[:2], app.settings, task.split
            )
        except JobGone as exc:
            log.warning("%s: %s; dropping the task", self.name, exc)
            return None
        except Exception as exc:
            if is_retriable(exc):
                reason = describe(exc)
                safely(lambda: mark_evaluation_queued(res.sessions, *where, reason))
            retry_or_fail(self, app, exc, failed)
            return None
        safely(lambda: auto_promote(res.sessions, task.version_id, app.settings))
        return metrics

    @app.task(name=ContributionsRun.name, bind=True, **eval_limits_of(app))
    def contributions_run(self: Task, /, **payload: Any) -> dict[str, Any] | None:
        res = app.resources
        version_id = ContributionsRun(**payload).version_id
        try:
            return compute_contributions(
                res.sessions, res.store, res.evaluator, version_id, app.settings
            )
        except (JobGone, TerminalJobError) as exc:
            log.warning("%s: %s", self.name, exc)
            return None


def _register_vector_pipeline(app: MedVecCelery) -> None:
    """An accepted vector: screening, the running sums, the auto-merge policy."""

    @app.task(name=PolicyCheck.name, ignore_result=False)
    def policy_check(**payload: Any) -> list[str]:
        base_id = PolicyCheck(**payload).base_id
        with session_scope(app.resources.sessions, job_queue(app)) as session:
            return check_policy(session, app.settings, base_id=base_id)

    @app.task(name=VectorAccepted.name, bind=True, **eval_limits_of(app))
    def vector_accepted(self: Task, /, **payload: Any) -> list[str]:
        vector_id = VectorAccepted(**payload).vector_id
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

    @app.task(name=SumsRefresh.name)
    def sums_refresh(**payload: Any) -> list[str]:
        """A hospital left: its share comes out of ``base_id``'s running sums."""
        base_id = SumsRefresh(**payload).base_id
        if not app.settings.running_sums:
            return []
        return refresh_sums(app.resources.sessions, app.resources.store, base_id)


def _register_upkeep(app: MedVecCelery) -> None:
    """A new base's check, and the sweeper."""

    @app.task(name=BaseVerify.name)
    def base_verify(**payload: Any) -> str | None:
        base_id = BaseVerify(**payload).base_id
        with session_scope(app.resources.sessions, job_queue(app)) as session:
            status = verify_base(session, app.resources.store, base_id)
        return None if status is None else status.value

    @app.task(name=SweepRun.name)
    def sweep_run(**payload: Any) -> list[str]:
        SweepRun(**payload)
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
