"""Merge requests: resolve the selection, key the job by its inputs, queue it after commit.

A job is identified by the hash of everything its output depends on (base bytes,
strategy, parameters, seed, each input's bytes and weight). The hash is UNIQUE,
so asking twice for the same merge returns the same job and never makes a second
version; asking again for a failed one queues it again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.jobs import defer_job
from app.models import BaseModelRecord, Benchmark, JobStatus, MergeJob
from app.security import Actor
from app.services import audit
from app.services.bases import require_ready
from app.services.calibration import CALIBRATION_AUTO, calibration_source
from app.services.errors import InvalidInput, NotFound
from app.services.evaluation_runs import queue_missing
from app.services.generations import current_base
from app.services.selection import Chosen, resolve_selection
from app.tasks import merge_task
from medvec.errors import MedVecError

if TYPE_CHECKING:
    from medvec.merging import MergeSpec


__all__ = [
    "MergeRequest",
    "get_job",
    "inputs_hash",
    "list_jobs",
    "request_merge",
]

SECURE_STRATEGIES = frozenset({"secure_weighted_mean", "secure_task_arithmetic"})
"""the strategies of secure-mode jobs and versions (``app.services.secure_merges``)"""


@dataclass(frozen=True)
class MergeRequest:
    """A merge as asked (by the API or the auto-merge policy), before it is checked.

    ``params`` are loose: ``"lambda": "tune"`` or a ``lambda_grid`` asks for tuning.
    ``vector_ids`` ``None`` takes each hospital's latest vector; ``rebase`` lets hospitals
    without one contribute their vector of an older generation, down-weighted (the
    default, as the API's and the auto-merge's); ``screened_only`` leaves vectors that
    screening has not looked at yet out of that default selection.
    """

    base_id: str | None = None
    strategy: str = "weighted_mean"
    params: Mapping[str, Any] = field(default_factory=dict)
    vector_ids: Sequence[str] | None = None
    rebase: bool = True
    staleness_power: float = 0.5
    screened_only: bool = False
    benchmark_id: str | None = None
    calibration: str = CALIBRATION_AUTO
    seed: int = 0


def merge_spec(request: MergeRequest, num_vectors: int) -> MergeSpec:
    """The request's ``MergeSpec``; ``InvalidInput`` saying what is wrong."""
    from medvec.merging import MergeSpec  # torch: only a merge request pays for it

    try:
        return MergeSpec.from_request(
            request.strategy,
            request.params,
            num_vectors=num_vectors,
            seed=request.seed,
            staleness_power=request.staleness_power,
            rebase=request.rebase,
        )
    except MedVecError as exc:
        raise InvalidInput(
            f"bad merge request: {exc.message}",
            hint=exc.hint or "see docs/workers.md for each strategy",
            strategy=request.strategy,
        ) from exc


def inputs_hash(
    base: BaseModelRecord,
    spec: MergeSpec,
    calibration: dict[str, Any] | None,
    chosen: Sequence[Chosen],
    benchmark_id: str | None,
) -> str:
    """sha256 of everything the merged weights depend on (the benchmark only when tuning)."""
    document = {
        "base": base.sha256,
        "strategy": spec.strategy,
        "params": {**spec.record(), "calibration": calibration},
        "inputs": sorted([c.vector.sha256, round(c.weight, 12)] for c in chosen),
        "tuned_on": benchmark_id if spec.tunes else None,
    }
    encoded = json.dumps(document, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(encoded.encode()).hexdigest()


def _selection_record(
    request: MergeRequest, spec: MergeSpec, chosen: Sequence[Chosen]
) -> dict[str, Any]:
    return {
        "mode": "explicit" if request.vector_ids else "latest",
        "screened_only": request.screened_only,
        "stale": "weight" if spec.rebase else "exclude",
        "staleness_power": spec.staleness_power,
        "inputs": [
            {
                "vector_id": c.vector.id,
                "hospital_id": c.vector.hospital_id,
                "sha256": c.vector.sha256,
                "num_samples": c.vector.num_samples,
                "weight": c.weight,
                "staleness": c.staleness,
            }
            for c in chosen
        ],
    }


def _benchmark(session: Session, benchmark_id: str | None, base: BaseModelRecord) -> None:
    if benchmark_id is None:
        return
    benchmark = session.get(Benchmark, benchmark_id)
    if benchmark is None:
        raise NotFound(f"no benchmark {benchmark_id}", hint="list them with GET /benchmarks")
    classes = int(base.spec.get("num_classes", benchmark.num_classes))
    if benchmark.num_classes != classes:
        raise InvalidInput(
            f"benchmark {benchmark.name} has {benchmark.num_classes} classes, "
            f"the base's model {classes}",
            hint="pick a benchmark of the base's task",
        )


def request_merge(
    session: Session, request: MergeRequest, *, actor: Actor
) -> tuple[MergeJob, bool]:
    """Create (or find) the job for ``request`` and defer its task; ``(job, queued_now)``.

    Everything is checked here, before any work: base, benchmark, strategy and params,
    every selected vector, the calibration images.
    """
    base = session.get(BaseModelRecord, request.base_id) if request.base_id else None
    if request.base_id and base is None:
        raise NotFound(f"no base {request.base_id}", hint="list bases with GET /api/v1/bases")
    base = base or current_base(session)
    require_ready(base)
    _benchmark(session, request.benchmark_id, base)
    spec = merge_spec(request, 1)
    chosen = resolve_selection(
        session, base, request.vector_ids, spec, screened_only=request.screened_only
    )
    spec = merge_spec(request, len(chosen))
    if spec.tunes and not request.benchmark_id:
        raise InvalidInput(
            "tuning lambda needs a benchmark",
            hint="give benchmark_id: lambda is chosen on its validation split",
        )
    calibration = calibration_source(session, base, request.calibration, request.benchmark_id)
    digest = inputs_hash(base, spec, calibration, chosen, request.benchmark_id)
    job = session.scalars(select(MergeJob).where(MergeJob.inputs_hash == digest)).first()
    if job is not None:
        return job, _requeue_existing(session, job, request.benchmark_id, actor)
    job = MergeJob(
        base_id=base.id,
        strategy=spec.strategy,
        params=dict(spec.params),
        weighting=spec.weighting,
        staleness_power=spec.staleness_power,
        rebase=spec.rebase,
        lambda_grid=list(spec.lambda_grid) if spec.lambda_grid is not None else None,
        seed=spec.seed,
        calibration_benchmark_id=calibration["benchmark_id"] if calibration else None,
        calibration_split=calibration["split"] if calibration else None,
        selection=_selection_record(request, spec, chosen),
        benchmark_id=request.benchmark_id,
        inputs_hash=digest,
        requested_by=actor.name,
    )
    enqueue(session, actor, job)
    return job, True


def enqueue(
    session: Session,
    actor: Actor,
    job: MergeJob,
    action: str = "merge.requested",
    **audited: Any,
) -> None:
    """Queue a new ``job``, or a failed one again with its attempts and error cleared:
    stored, audited as ``action`` (with ``audited``), its task deferred to the commit."""
    job.status, job.error, job.attempts, job.finished_at = JobStatus.QUEUED, None, 0, None
    session.add(job)
    session.flush()
    _audit(session, actor, action, job, **audited)
    defer_job(session, merge_task(job))


def _requeue_existing(session: Session, job: MergeJob, wanted: str | None, actor: Actor) -> bool:
    """A failed job goes back in the queue; a finished one gets the newly asked evaluation."""
    if job.status is JobStatus.FAILED:
        enqueue(session, actor, job, "merge.requeued")
        return True
    if job.status is JobStatus.SUCCEEDED and job.version_id and wanted != job.benchmark_id:
        benchmark = session.get(Benchmark, wanted) if wanted is not None else None
        if benchmark is not None:
            queue_missing(session, job.version_id, [benchmark])
    return False


def _audit(session: Session, actor: Actor, action: str, job: MergeJob, **audited: Any) -> None:
    audit.record(
        session,
        actor,
        action,
        target_type="merge_job",
        target_id=job.id,
        strategy=job.strategy,
        base_id=job.base_id,
        **audited,
    )


def get_job(session: Session, job_id: str) -> MergeJob:
    job = session.get(MergeJob, job_id)
    if job is None:
        raise NotFound(f"no merge job {job_id}", hint="list jobs with GET /api/v1/merges")
    return job


def list_jobs(
    session: Session, *, status: JobStatus | None = None, base_id: str | None = None
) -> list[MergeJob]:
    query = select(MergeJob).order_by(MergeJob.created_at.desc())
    if status is not None:
        query = query.where(MergeJob.status == status)
    if base_id is not None:
        query = query.where(MergeJob.base_id == base_id)
    return list(session.scalars(query))
