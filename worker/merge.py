"""Run one merge job: claim it, stream the merge, store the blob, record the version.

Three short transactions around the long computation, so the job's state is
visible while it runs and a crash at any point is safe:

1. claim: lock the job row; ``succeeded``/``failed`` → nothing to do, and so for a
   job waiting for the share holder until its ``retry_at``; count the delivery in
   ``attempts`` and give up past ``max_attempts``; mark ``running``.
2. compute (no transaction): the streaming engine writes into the blob store's
   staging area; the input vectors' mean pairwise cosine is measured; where the job
   names calibration images the merged model's BatchNorm statistics are recomputed
   on them and the final file written (``worker.calibrate``); the blob is renamed
   into place only when complete.
3. finish: lock the job row again; if another delivery finished first, keep its
   version; otherwise insert the version and its lineage and mark ``succeeded``
   in one commit. A version row therefore never exists without its blob, and one
   job never makes two versions.

With ``MEDVEC_MERGE_QUEUE`` set, step 2 is cut in two tasks so that the merge itself
runs in a worker that never imports torch (``worker.merge_main``): the merge task
(``run_merge`` on the merge queue) writes the merged file, measures its inputs' cosine,
stores the file as a blob and sends ``medvec.merge.finish`` to the default queue, where
``finish_merge`` recalibrates it, stores the final blob and does step 3. The job stays
``running`` in between; a finish task that finds the job done does nothing, and the
sweeper re-sends the merge when its lease runs out, as for any job. An intermediate blob
that recalibration replaced is named by no row: the orphan sweep removes it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session, sessionmaker

from app.db import utcnow
from app.jobs import JobQueue, defer_job
from app.metrics import MERGE_SECONDS
from app.models import (
    JobStatus,
    MergeJob,
    ModelVersion,
    VersionInput,
    VersionStatus,
)
from app.services import audit
from app.storage import BlobInfo, BlobStore
from app.tasks import MergeFinish
from medvec.hashing import sha256_file
from worker.config import WorkerSettings
from worker.errors import JobGone, TerminalJobError
from worker.generations import after_merge
from worker.merge_jobs import WORKER, fail
from worker.merge_plan import MergePlan, plan_of
from worker.session import session_scope

if TYPE_CHECKING:
    from worker.evaluate import Evaluator

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Computed:
    """The stored blob of a merge and what was measured while making it."""

    sha256: str
    size: int
    calibration: dict[str, Any] | None
    mergeability: dict[str, Any]
    val_metrics: dict[str, Any] | None = None


@dataclass(frozen=True)
class MergeOutcome:
    job_id: str
    version_id: str | None
    status: JobStatus
    ran: bool


def _locked_job(session: Session, job_id: str) -> MergeJob:
    job = session.get(MergeJob, job_id, with_for_update=True)
    if job is None:
        raise JobGone(f"merge job {job_id} does not exist")
    return job


def claim(
    session: Session, store: BlobStore, job_id: str, settings: WorkerSettings
) -> MergePlan | MergeOutcome:
    """Mark the job running and return what to merge, or the outcome when there is no work."""
    job = _locked_job(session, job_id)
    if job.status in (JobStatus.SUCCEEDED, JobStatus.FAILED):
        return MergeOutcome(job.id, job.version_id, job.status, ran=False)
    if job.status is JobStatus.QUEUED and job.retry_at is not None and job.retry_at > utcnow():
        # a second copy of a job that waits for the share holder (the sweeper's, or one
        # Redis delivered again): the message sent for retry_at is the one that tries
        return MergeOutcome(job.id, None, job.status, ran=False)
    job.attempts += 1
    if job.attempts > settings.max_attempts:
        fail(
            job,
            f"gave up after {settings.max_attempts} deliveries: each attempt died "
            "(the worker was killed, ran out of memory, or hit its time limit)",
        )
        return MergeOutcome(job.id, None, job.status, ran=False)
    job.status = JobStatus.RUNNING
    job.started_at = utcnow()
    job.error = None
    job.retry_at = None
    return plan_of(session, store, job)


@dataclass(frozen=True)
class Built:
    """The merged file in the staging area, before recalibration, and its inputs' cosine."""

    path: Path
    from_sums: bool
    cosine: float | None
    stored: bool = False
    """``path`` is a stored blob (the merge task's, in two-queue mode), not a staging file."""


def build(plan: MergePlan, store: BlobStore, settings: WorkerSettings, out: Path) -> Built:
    """Write the merged model to ``out`` (from the running sums when they hold exactly the
    inputs) and measure the inputs' mean pairwise cosine. Imports no torch."""
    from medvec.merging import mean_pairwise_cosine, merge_files

    delay = settings.merge_tensor_delay_s
    from_sums = _merge_from_sums(plan, store, out)
    if not from_sums:
        merge_files(
            plan.base_path,
            plan.vector_paths,
            out,
            strategy=plan.spec.strategy,
            params=plan.spec.params,
            weights=plan.spec.engine_weights(plan.weights),
            seed=plan.spec.seed,
            provenance=plan.provenance,
            progress=(lambda *_a, **_k: time.sleep(delay)) if delay > 0 else None,
            base_sha256=plan.base_sha256,
            rebase=plan.rebase,
        )
    # the pairwise cosine reads every vector: a version built from the sums skips it
    cosine = None if from_sums else mean_pairwise_cosine(plan.vector_paths)
    return Built(out, from_sums, cosine)


def complete(
    plan: MergePlan,
    store: BlobStore,
    evaluator: Evaluator,
    settings: WorkerSettings,
    built: Built,
    stamp: str,
) -> Computed:
    """Recalibrate the merged file (torch), measure it on val, and commit the final blob."""
    from worker.calibrate import recalibrate_merged

    calibrated = store.staging_path(f"calibrated-{stamp}.safetensors")
    try:
        final = recalibrate_merged(
            built.path,
            calibrated,
            store,
            evaluator,
            calibration=plan.calibration,
            validation=plan.validation,
            batch_size=settings.eval_batch_size,
        )
        digest = sha256_file(final.path)
        if built.stored and final.path == built.path:  # not recalibrated: already stored
            info = BlobInfo(digest, store.size(digest))
        else:
            info = store.commit(final.path, digest)
    finally:
        calibrated.unlink(missing_ok=True)
    mergeability = {
        "mean_cosine": built.cosine,
        "from_running_sums": built.from_sums,
        "validation_benchmark_id": plan.validation.benchmark_id if plan.validation else None,
        "val_accuracy_combined": final.val_accuracy_combined,
        "val_accuracy_recalibrated": final.val_accuracy_recalibrated,
    }
    return Computed(info.sha256, info.size, final.calibration, mergeability, final.val_metrics)


def compute(
    plan: MergePlan, store: BlobStore, evaluator: Evaluator, settings: WorkerSettings
) -> Computed:
    """Merge into the staging area, measure, recalibrate, and commit the final blob."""
    stamp = f"{plan.job_id}-{time.monotonic_ns()}"
    staged = store.staging_path(f"merge-{stamp}.safetensors")
    try:
        built = build(plan, store, settings, staged)
        return complete(plan, store, evaluator, settings, built, stamp)
    finally:
        staged.unlink(missing_ok=True)


def _merge_from_sums(plan: MergePlan, store: BlobStore, out: Path) -> bool:
    """Build the version from this machine's running sums when they hold exactly the plan's
    inputs; ``False`` (nothing written) otherwise."""
    from medvec.merging.sums import merge_from_sums
    from worker.sums import holds, sums_path

    if plan.sums_weighting is None:
        return False
    path = sums_path(store, plan.base_id, plan.sums_weighting)
    members = dict(zip(plan.vector_ids, plan.weights, strict=True))
    if not holds(path, plan.base_sha256, members):
        return False
    merge_from_sums(
        plan.base_path,
        path,
        out,
        strategy=plan.spec.strategy,
        params=plan.spec.params,
        provenance=plan.provenance,
        base_sha256=plan.base_sha256,
    )
    return True


def finish(
    session: Session, plan: MergePlan, computed: Computed, settings: WorkerSettings
) -> MergeOutcome:
    """Record the version and mark the job succeeded, unless a twin delivery already did;
    an auto-merged version starts the next generation here (``worker.generations``)."""
    job = _locked_job(session, plan.job_id)
    if job.status is JobStatus.SUCCEEDED:
        return MergeOutcome(job.id, job.version_id, job.status, ran=False)
    version = ModelVersion(
        base_id=plan.base_id,
        name=f"{plan.strategy}-{plan.job_id[:8]}",
        strategy=plan.strategy,
        params={**job.record(), "merge_job_id": job.id},
        sha256=computed.sha256,
        size=computed.size,
        status=VersionStatus.CANDIDATE,
        calibration=computed.calibration,
        mergeability=computed.mergeability,
    )
    session.add(version)
    session.flush()
    for vector_id, weight in zip(plan.vector_ids, plan.weights, strict=True):
        session.add(VersionInput(version_id=version.id, vector_id=vector_id, weight=weight))
    if plan.validation is not None and computed.val_metrics is not None:
        from worker.evaluate import store_metrics  # torch: only where calibration ran

        # the stored model was already measured on val: that is its val evaluation
        validation = plan.validation
        store_metrics(
            session, version.id, validation.benchmark_id, validation.split, computed.val_metrics
        )
    job.status = JobStatus.SUCCEEDED
    job.version_id = version.id
    job.finished_at = utcnow()
    job.error = None
    job.waiting_since = job.retry_at = None
    audit.record(
        session,
        WORKER,
        "version.created",
        target_type="model_version",
        target_id=version.id,
        merge_job_id=job.id,
        strategy=job.strategy,
        sha256=computed.sha256,
        recalibrated=computed.calibration is not None,
    )
    after_merge(session, job, version, settings)
    return MergeOutcome(job.id, version.id, job.status, ran=True)


def run_merge(
    sessions: sessionmaker[Session],
    store: BlobStore,
    job_id: str,
    settings: WorkerSettings,
    queue: JobQueue | None = None,
    *,
    evaluator: Callable[[], Evaluator],
) -> MergeOutcome:
    """Run merge job ``job_id`` to its end; safe to call again for the same job at any time.

    With ``settings.merge_queue`` set this is the merge queue's half: it writes and stores
    the merged file and sends ``medvec.merge.finish`` through ``queue`` (the job's version
    comes from ``finish_merge``). ``evaluator`` gives the process's evaluator (as
    ``WorkerResources.evaluator`` does) and is called only when the merge is completed
    here: the merge-only worker never builds one, and so never imports torch."""
    with session_scope(sessions) as session:
        claimed = claim(session, store, job_id, settings)
    if isinstance(claimed, MergeOutcome):
        log.info("merge job %s: nothing to do (%s)", job_id, claimed.status.value)
        return claimed
    started = time.perf_counter()
    if settings.merge_queue is not None:
        return _build_and_hand_over(sessions, store, claimed, settings, queue, started)
    computed = compute(claimed, store, evaluator(), settings)
    MERGE_SECONDS.labels(strategy=claimed.strategy).observe(time.perf_counter() - started)
    with session_scope(sessions) as session:
        outcome = finish(session, claimed, computed, settings)
    log.info(
        "merge job %s: %s in %.2fs (version %s)",
        job_id,
        "done" if outcome.ran else "already done by another delivery",
        time.perf_counter() - started,
        outcome.version_id,
    )
    return outcome


def _build_and_hand_over(
    sessions: sessionmaker[Session],
    store: BlobStore,
    plan: MergePlan,
    settings: WorkerSettings,
    queue: JobQueue | None,
    started: float,
) -> MergeOutcome:
    """Write and store the merged file, then send the finishing task (in the commit that
    confirms the job still runs)."""
    if queue is None:
        raise TerminalJobError("a merge on the merge queue needs a job queue to hand over to")
    staged = store.staging_path(f"merge-{plan.job_id}-{time.monotonic_ns()}.safetensors")
    try:
        built = build(plan, store, settings, staged)
        info = store.commit(staged, sha256_file(staged))
    finally:
        staged.unlink(missing_ok=True)
    MERGE_SECONDS.labels(strategy=plan.strategy).observe(time.perf_counter() - started)
    with session_scope(sessions, queue) as session:
        job = _locked_job(session, plan.job_id)
        if job.status is not JobStatus.RUNNING:
            return MergeOutcome(job.id, job.version_id, job.status, ran=False)
        finishing = MergeFinish(
            job_id=plan.job_id,
            merged_sha256=info.sha256,
            cosine=built.cosine,
            from_sums=built.from_sums,
        )
        defer_job(session, finishing)
    log.info(
        "merge job %s: merged in %.2fs; recalibration and the version follow on %s",
        plan.job_id,
        time.perf_counter() - started,
        settings.queue,
    )
    return MergeOutcome(plan.job_id, None, JobStatus.RUNNING, ran=True)


def finish_merge(
    sessions: sessionmaker[Session],
    store: BlobStore,
    job_id: str,
    settings: WorkerSettings,
    *,
    evaluator: Evaluator,
    merged_sha256: str,
    cosine: float | None,
    from_sums: bool,
) -> MergeOutcome:
    """The default queue's half of a merge the merge queue wrote: recalibrate the stored
    file, commit the final blob, record the version. Safe to call again."""
    with session_scope(sessions) as session:
        job = session.get(MergeJob, job_id)
        if job is None:
            raise JobGone(f"merge job {job_id} does not exist")
        if job.status is not JobStatus.RUNNING:
            return MergeOutcome(job.id, job.version_id, job.status, ran=False)
        plan = plan_of(session, store, job)
    if not store.exists(merged_sha256):
        raise TerminalJobError(
            f"the merged file {merged_sha256[:12]} of merge job {job_id} is gone (swept as "
            "an orphan before it was recalibrated): request the merge again"
        )
    started = time.perf_counter()
    built = Built(store.local_path(merged_sha256), from_sums, cosine, stored=True)
    stamp = f"{job_id}-{time.monotonic_ns()}"
    computed = complete(plan, store, evaluator, settings, built, stamp)
    with session_scope(sessions) as session:
        outcome = finish(session, plan, computed, settings)
    log.info(
        "merge job %s: recalibrated and recorded in %.2fs (version %s)",
        job_id,
        time.perf_counter() - started,
        outcome.version_id,
    )
    return outcome
