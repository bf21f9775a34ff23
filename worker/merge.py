"""Run one merge job: claim it, stream the merge, store the blob, record the version.

Three short transactions around the long computation, so the job's state is
visible while it runs and a crash at any point is safe:

1. claim: lock the job row; ``succeeded``/``failed`` → nothing to do; count the
   delivery in ``attempts`` and give up past ``max_attempts``; mark ``running``.
2. compute (no transaction): the streaming engine writes into the blob store's
   staging area; the input vectors' mean pairwise cosine is measured; where the job
   names calibration images the merged model's BatchNorm statistics are recomputed
   on them and the final file written (``worker.calibrate``); the blob is renamed
   into place only when complete.
3. finish: lock the job row again; if another delivery finished first, keep its
   version; otherwise insert the version and its lineage and mark ``succeeded``
   in one commit. A version row therefore never exists without its blob, and one
   job never makes two versions.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.db import utcnow
from app.models import (
    BaseModelRecord,
    Benchmark,
    DataVector,
    JobStatus,
    MergeJob,
    ModelVersion,
    VersionInput,
    VersionStatus,
)
from app.security import Actor
from app.services import audit
from app.services.calibration import VALIDATION_SPLIT, validation_benchmark
from app.services.merges import strategy_params
from app.storage import BlobStore
from medvec.hashing import sha256_file
from worker.calibrate import recalibrate_merged
from worker.config import WorkerSettings
from worker.errors import JobGone, TerminalJobError
from worker.evaluate import SplitRef, store_metrics
from worker.session import session_scope

log = logging.getLogger(__name__)

WORKER = Actor.system("worker")


@dataclass(frozen=True)
class MergePlan:
    job_id: str
    base_id: str
    base_path: Path
    strategy: str
    params: dict[str, Any]
    seed: int
    vector_ids: list[str]
    vector_paths: list[Path]
    weights: list[float]
    provenance: dict[str, Any]
    base_sha256: str = ""
    stale: tuple[int, ...] = ()
    calibration: SplitRef | None = None
    validation: SplitRef | None = None


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
    job.attempts += 1
    if job.attempts > settings.max_attempts:
        _fail(
            job,
            f"gave up after {settings.max_attempts} deliveries: each attempt died "
            "(the worker was killed, ran out of memory, or hit its time limit)",
        )
        return MergeOutcome(job.id, None, job.status, ran=False)
    job.status = JobStatus.RUNNING
    job.started_at = utcnow()
    job.error = None
    return _plan(session, store, job)


def _plan(session: Session, store: BlobStore, job: MergeJob) -> MergePlan:
    base = session.get(BaseModelRecord, job.base_id)
    if base is None:
        raise JobGone(f"base {job.base_id} of merge job {job.id} does not exist")
    inputs = job.selection.get("inputs", [])
    vectors = {
        v.id: v
        for v in session.scalars(
            select(DataVector).where(DataVector.id.in_([i["vector_id"] for i in inputs]))
        )
    }
    missing = [i["vector_id"] for i in inputs if i["vector_id"] not in vectors]
    if missing:
        raise JobGone(f"vectors {missing} of merge job {job.id} no longer exist")
    lineage = [{"vector_id": i["vector_id"], "weight": i["weight"]} for i in inputs]
    validation = validation_benchmark(session, base, job.benchmark_id)
    return MergePlan(
        job_id=job.id,
        base_id=base.id,
        base_path=store.local_path(base.sha256),
        strategy=job.strategy,
        params=strategy_params(job.params),
        seed=int(job.params.get("seed", 0)),
        vector_ids=[i["vector_id"] for i in inputs],
        vector_paths=[store.local_path(vectors[i["vector_id"]].sha256) for i in inputs],
        weights=[float(i["weight"]) for i in inputs],
        base_sha256=base.sha256,
        stale=tuple(n for n, i in enumerate(inputs) if int(i.get("staleness", 0)) > 0),
        calibration=_calibration_images(session, job),
        validation=SplitRef.of(validation, VALIDATION_SPLIT) if validation else None,
        provenance={
            "merge_job_id": job.id,
            "base_id": base.id,
            "base_sha256": base.sha256,
            "generation": base.generation,
            "strategy": job.strategy,
            "params": strategy_params(job.params),
            "seed": int(job.params.get("seed", 0)),
            "inputs": lineage,
        },
    )


def _calibration_images(session: Session, job: MergeJob) -> SplitRef | None:
    """The split the job recalibrates on (chosen at request time), or ``None``."""
    source = job.params.get("calibration")
    if not source:
        return None
    benchmark = session.get(Benchmark, source["benchmark_id"])
    if benchmark is None:
        raise TerminalJobError(
            f"calibration benchmark {source['benchmark_id']} of merge job {job.id} no longer "
            "exists: request the merge again"
        )
    return SplitRef.of(benchmark, str(source["split"]))


def compute(plan: MergePlan, store: BlobStore, settings: WorkerSettings) -> Computed:
    """Merge into the staging area, measure, recalibrate, and commit the final blob."""
    from medvec.merging import mean_pairwise_cosine, merge_files

    stamp = f"{plan.job_id}-{time.monotonic_ns()}"
    staged = store.staging_path(f"merge-{stamp}.safetensors")
    calibrated = store.staging_path(f"calibrated-{stamp}.safetensors")
    delay = settings.merge_tensor_delay_s
    rebased = [rebase_vector(plan, store, n) for n in plan.stale]
    paths = list(plan.vector_paths)
    for n, path in zip(plan.stale, rebased, strict=True):
        paths[n] = path
    try:
        merge_files(
            plan.base_path,
            paths,
            staged,
            strategy=plan.strategy,
            params=plan.params,
            weights=plan.weights if _uses_weights(plan.strategy) else None,
            seed=plan.seed,
            provenance=plan.provenance,
            progress=(lambda *_a, **_k: time.sleep(delay)) if delay > 0 else None,
        )
        cosine = mean_pairwise_cosine(paths)
        final = recalibrate_merged(
            staged,
            calibrated,
            store,
            calibration=plan.calibration,
            validation=plan.validation,
            batch_size=settings.eval_batch_size,
        )
        digest = sha256_file(final.path)
        info = store.commit(final.path, digest)
    finally:
        for path in (staged, calibrated, *rebased):
            path.unlink(missing_ok=True)
    mergeability = {
        "mean_cosine": cosine,
        "validation_benchmark_id": plan.validation.benchmark_id if plan.validation else None,
        "val_accuracy_combined": final.val_accuracy_combined,
        "val_accuracy_recalibrated": final.val_accuracy_recalibrated,
    }
    return Computed(info.sha256, info.size, final.calibration, mergeability, final.val_metrics)


def _uses_weights(strategy: str) -> bool:
    from medvec.merging import get_strategy

    return get_strategy(strategy).uses_weights


def rebase_vector(plan: MergePlan, store: BlobStore, index: int) -> Path:
    """A staging copy of an older generation's vector labelled with the merged base.

    A data vector is a direction in weight space; stale weighting applies it to the
    newer base (with its down-weighting already in ``plan.weights``). The copy keeps
    the tensors bit for bit and records the base it was made against.
    """
    from medvec.vectors import load_vector, save_vector

    tensors, metadata = load_vector(plan.vector_paths[index])
    extra = {
        **metadata.extra,
        "rebased_from_base_id": metadata.base_id,
        "rebased_from_base_sha256": metadata.base_sha256,
    }
    relabelled = metadata.model_copy(
        update={"base_id": plan.base_id, "base_sha256": plan.base_sha256, "extra": extra}
    )
    out = store.staging_path(f"rebased-{plan.job_id}-{index}-{time.monotonic_ns()}.safetensors")
    return save_vector(out, tensors, relabelled)


def finish(session: Session, plan: MergePlan, computed: Computed) -> MergeOutcome:
    """Record the version and mark the job succeeded, unless a twin delivery already did."""
    job = _locked_job(session, plan.job_id)
    if job.status is JobStatus.SUCCEEDED:
        return MergeOutcome(job.id, job.version_id, job.status, ran=False)
    version = ModelVersion(
        base_id=plan.base_id,
        name=f"{plan.strategy}-{plan.job_id[:8]}",
        strategy=plan.strategy,
        params={**job.params, "merge_job_id": job.id},
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
        # the stored model was already measured on val: that is its val evaluation
        validation = plan.validation
        store_metrics(
            session, version.id, validation.benchmark_id, validation.split, computed.val_metrics
        )
    job.status = JobStatus.SUCCEEDED
    job.version_id = version.id
    job.finished_at = utcnow()
    job.error = None
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
    return MergeOutcome(job.id, version.id, job.status, ran=True)


def _fail(job: MergeJob, reason: str) -> None:
    job.status = JobStatus.FAILED
    job.error = reason[:4000]
    job.finished_at = utcnow()


def mark_failed(sessions: sessionmaker[Session], job_id: str, reason: str) -> None:
    """Terminal failure: the job ends ``failed`` with ``reason`` (unless it already succeeded)."""
    with session_scope(sessions) as session:
        job = session.get(MergeJob, job_id, with_for_update=True)
        if job is None or job.status is JobStatus.SUCCEEDED:
            return
        _fail(job, reason)
        audit.record(
            session,
            WORKER,
            "merge.failed",
            target_type="merge_job",
            target_id=job_id,
            error=job.error,
        )


def mark_queued(sessions: sessionmaker[Session], job_id: str, reason: str) -> None:
    """A transient failure: back to ``queued`` with the reason, for the retry to pick up."""
    with session_scope(sessions) as session:
        job = session.get(MergeJob, job_id, with_for_update=True)
        if job is not None and job.status is JobStatus.RUNNING:
            job.status = JobStatus.QUEUED
            job.error = f"retrying after: {reason}"[:4000]


def run_merge(
    sessions: sessionmaker[Session], store: BlobStore, job_id: str, settings: WorkerSettings
) -> MergeOutcome:
    """Run merge job ``job_id`` to its end; safe to call again for the same job at any time."""
    with session_scope(sessions) as session:
        claimed = claim(session, store, job_id, settings)
    if isinstance(claimed, MergeOutcome):
        log.info("merge job %s: nothing to do (%s)", job_id, claimed.status.value)
        return claimed
    started = time.perf_counter()
    computed = compute(claimed, store, settings)
    with session_scope(sessions) as session:
        outcome = finish(session, claimed, computed)
    log.info(
        "merge job %s: %s in %.2fs (version %s)",
        job_id,
        "done" if outcome.ran else "already done by another delivery",
        time.perf_counter() - started,
        outcome.version_id,
    )
    return outcome
