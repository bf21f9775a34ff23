"""Merge requests: resolve the selection, key the job by its inputs, queue it after commit.

A job is identified by the hash of everything its output depends on (base bytes,
strategy, parameters, seed, each input's bytes and weight). The hash is UNIQUE,
so asking twice for the same merge returns the same job and never makes a second
version; asking again for a failed one queues it again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.errors import InvalidInput, NotFound
from app.jobs import defer_job
from app.models import BaseModelRecord, Benchmark, JobStatus, MergeJob
from app.schemas.merges import DEFAULT_LAMBDA_GRID, LAMBDA_MULTIPLES, MergeCreate, MergeRead
from app.security import Actor
from app.services import audit
from app.services.calibration import calibration_source
from app.services.selection import Chosen, resolve_selection

MERGE_TASK = "medvec.merge.run"
TUNE_TASK = "medvec.tune.run"
EVALUATE_TASK = "medvec.evaluate.run"
POLICY_TASK = "medvec.policy.check"

#: keys of ``MergeJob.params`` that steer the job and are not the strategy's own
JOB_KEYS = frozenset({"seed", "lambda_grid", "tuning", "calibration"})


def current_base(session: Session) -> BaseModelRecord:
    """The base of the newest generation (the one hospitals pull)."""
    query = select(BaseModelRecord).order_by(
        BaseModelRecord.generation.desc(), BaseModelRecord.created_at.desc()
    )
    base = session.scalars(query.limit(1)).first()
    if base is None:
        raise NotFound("no base is registered", hint="register one with POST /api/v1/bases")
    return base


def strategy_params(params: dict[str, Any]) -> dict[str, Any]:
    """The strategy's own parameters out of a job's ``params``."""
    return {k: v for k, v in params.items() if k not in JOB_KEYS}


def _check_strategy(strategy: str, params: dict[str, Any]) -> None:
    from medvec.errors import MedVecError
    from medvec.merging import get_strategy, list_strategies

    if strategy not in list_strategies():
        raise InvalidInput(
            f"unknown merge strategy {strategy!r}",
            hint=f"use one of {', '.join(sorted(list_strategies()))}",
        )
    try:
        get_strategy(strategy).parse_params(params)
    except MedVecError as exc:
        raise InvalidInput(
            f"bad parameters for {strategy}: {exc}", hint="see docs/workers.md for each strategy"
        ) from exc


def default_lambda_grid(num_vectors: int) -> list[float]:
    """``DEFAULT_LAMBDA_GRID`` and ``LAMBDA_MULTIPLES / N``, sorted, without repeats."""
    points = {*DEFAULT_LAMBDA_GRID, *(m / num_vectors for m in LAMBDA_MULTIPLES)}
    return sorted({round(float(x), 9) for x in points})


def _job_params(request: MergeCreate, num_vectors: int) -> dict[str, Any]:
    """The request's params, with lambda tuning spelled out as a grid."""
    params = dict(request.params)
    tuning = request.strategy == "task_arithmetic" and (
        params.get("lambda") == "tune" or "lambda_grid" in params
    )
    if tuning:
        grid = params.pop("lambda_grid", None) or default_lambda_grid(num_vectors)
        params.pop("lambda", None)
        if not request.benchmark_id:
            raise InvalidInput(
                "tuning lambda needs a benchmark",
                hint="give benchmark_id: lambda is chosen on its validation split",
            )
        if not all(isinstance(x, int | float) and x > 0 for x in grid):
            raise InvalidInput("lambda_grid must hold positive numbers", lambda_grid=grid)
        params["lambda_grid"] = sorted(float(x) for x in grid)
    _check_strategy(request.strategy, strategy_params(params))
    params["seed"] = request.seed
    return params


def inputs_hash(
    base: BaseModelRecord,
    strategy: str,
    params: dict[str, Any],
    chosen: Sequence[Chosen],
    benchmark_id: str | None,
) -> str:
    """sha256 of everything the merged weights depend on (the benchmark only when tuning)."""
    document = {
        "base": base.sha256,
        "strategy": strategy,
        "params": params,
        "inputs": sorted([c.vector.sha256, round(c.weight, 12)] for c in chosen),
        "tuned_on": benchmark_id if "lambda_grid" in params else None,
    }
    encoded = json.dumps(document, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(encoded.encode()).hexdigest()


def _selection_record(request: MergeCreate, chosen: Sequence[Chosen]) -> dict[str, Any]:
    return {
        "mode": "explicit" if request.selection.vector_ids else "latest",
        "stale": request.selection.stale.value,
        "staleness_power": request.selection.staleness_power,
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


def request_merge(session: Session, request: MergeCreate, *, actor: Actor) -> tuple[MergeJob, bool]:
    """Create (or find) the job for ``request`` and defer its task; ``(job, queued_now)``.

    Everything is checked here, before any work: base, benchmark, strategy and params,
    every selected vector, the calibration images (recorded as ``params["calibration"]``).
    """
    base = session.get(BaseModelRecord, request.base_id) if request.base_id else None
    if request.base_id and base is None:
        raise NotFound(f"no base {request.base_id}", hint="list bases with GET /api/v1/bases")
    base = base or current_base(session)
    _benchmark(session, request.benchmark_id, base)
    _check_strategy(request.strategy, {})
    chosen = resolve_selection(session, base, request.selection, request.strategy)
    params = _job_params(request, len(chosen))
    params["calibration"] = calibration_source(
        session, base, request.calibration, request.benchmark_id
    )
    digest = inputs_hash(base, request.strategy, params, chosen, request.benchmark_id)
    job = session.scalars(select(MergeJob).where(MergeJob.inputs_hash == digest)).first()
    if job is not None:
        return job, _requeue_existing(session, job, request, actor)
    job = MergeJob(
        base_id=base.id,
        strategy=request.strategy,
        params=params,
        selection=_selection_record(request, chosen),
        benchmark_id=request.benchmark_id,
        inputs_hash=digest,
        status=JobStatus.QUEUED,
        attempts=0,
        requested_by=actor.name,
    )
    session.add(job)
    session.flush()
    _audit(session, actor, "merge.requested", job)
    defer_job(session, task_for(job), job_id=job.id)
    return job, True


def _requeue_existing(session: Session, job: MergeJob, request: MergeCreate, actor: Actor) -> bool:
    """A failed job goes back in the queue; a finished one gets the newly asked evaluation."""
    if job.status is JobStatus.FAILED:
        job.status, job.error, job.attempts, job.finished_at = JobStatus.QUEUED, None, 0, None
        session.flush()
        _audit(session, actor, "merge.requeued", job)
        defer_job(session, task_for(job), job_id=job.id)
        return True
    wanted = request.benchmark_id
    if job.status is JobStatus.SUCCEEDED and job.version_id and wanted != job.benchmark_id:
        if wanted is not None:
            defer_job(session, EVALUATE_TASK, version_id=job.version_id, benchmark_id=wanted)
    return False


def task_for(job: MergeJob) -> str:
    return TUNE_TASK if "lambda_grid" in job.params else MERGE_TASK


def _audit(session: Session, actor: Actor, action: str, job: MergeJob) -> None:
    audit.record(
        session,
        actor,
        action,
        target_type="merge_job",
        target_id=job.id,
        strategy=job.strategy,
        base_id=job.base_id,
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


def to_read(job: MergeJob) -> MergeRead:
    return MergeRead(
        id=job.id,
        job_id=job.id,
        base_id=job.base_id,
        strategy=job.strategy,
        params=job.params,
        selection=job.selection,
        benchmark_id=job.benchmark_id,
        inputs_hash=job.inputs_hash,
        status=job.status.value,
        attempts=job.attempts,
        error=job.error,
        version_id=job.version_id,
        requested_by=job.requested_by,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
    )
