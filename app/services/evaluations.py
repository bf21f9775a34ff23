"""Reading evaluations: per version (hospitals: production only) and the leaderboard."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import Benchmark, Evaluation, EvaluationStatus, ModelVersion, VersionStatus
from app.schemas.evaluations import RANKABLE_METRICS, EvaluationRead, LeaderboardRow
from app.security import Actor
from app.services.errors import InvalidInput, NotFound

#: metrics where lower is better
ASCENDING = frozenset({"ece"})


def _read(evaluation: Evaluation, benchmark_name: str | None) -> EvaluationRead:
    return EvaluationRead(
        id=evaluation.id,
        version_id=evaluation.version_id,
        benchmark_id=evaluation.benchmark_id,
        benchmark_name=benchmark_name,
        split=evaluation.split,
        status=evaluation.status.value,
        metrics=evaluation.metrics,
        error=evaluation.error,
        attempts=evaluation.attempts,
        lease_expires_at=evaluation.lease_expires_at,
        created_at=evaluation.created_at,
        updated_at=evaluation.updated_at,
    )


def read_evaluation(session: Session, evaluation: Evaluation) -> EvaluationRead:
    benchmark = session.get(Benchmark, evaluation.benchmark_id)
    return _read(evaluation, benchmark.name if benchmark is not None else None)


def version_evaluations(session: Session, actor: Actor, version_id: str) -> list[EvaluationRead]:
    """Evaluations of ``version_id``; a hospital sees them only for the production version
    (any other version answers 404, as if it did not exist)."""
    if version_id == "production":
        query = select(ModelVersion).where(ModelVersion.status == VersionStatus.PRODUCTION)
        version = session.scalars(query).first()
        version_id = version.id if version is not None else version_id
    else:
        version = session.get(ModelVersion, version_id)
    visible = version is not None and (actor.is_admin or version.status is VersionStatus.PRODUCTION)
    if not visible:
        raise NotFound(f"no version {version_id}", hint="list versions with GET /versions")
    rows = (
        select(Evaluation, Benchmark.name)
        .join(Benchmark, Benchmark.id == Evaluation.benchmark_id)
        .where(Evaluation.version_id == version_id)
        .order_by(Benchmark.name, Evaluation.split)
    )
    return [_read(evaluation, name) for evaluation, name in session.execute(rows)]


def leaderboard(
    session: Session,
    *,
    metric: str = "accuracy",
    benchmark_id: str | None = None,
    split: str = "test",
    limit: int = 100,
) -> list[LeaderboardRow]:
    """Versions ranked by ``metric`` on completed evaluations (best first; ``ece``: lowest)."""
    if metric not in RANKABLE_METRICS:
        raise InvalidInput(
            f"cannot rank by {metric!r}", hint=f"use one of {', '.join(RANKABLE_METRICS)}"
        )
    query = (
        select(Evaluation, ModelVersion, Benchmark)
        .join(ModelVersion, ModelVersion.id == Evaluation.version_id)
        .join(Benchmark, Benchmark.id == Evaluation.benchmark_id)
        .where(Evaluation.status == EvaluationStatus.COMPLETED, Evaluation.split == split)
    )
    if benchmark_id is not None:
        if session.get(Benchmark, benchmark_id) is None:
            raise NotFound(f"no benchmark {benchmark_id}", hint="list them with GET /benchmarks")
        query = query.where(Evaluation.benchmark_id == benchmark_id)
    scored = [
        (float(value), evaluation, version, benchmark)
        for evaluation, version, benchmark in session.execute(query)
        if (value := evaluation.metrics.get(metric)) is not None
    ]
    sign = 1.0 if metric in ASCENDING else -1.0
    scored.sort(key=lambda row: (sign * row[0], row[2].created_at))
    return [
        LeaderboardRow(
            rank=rank,
            version_id=version.id,
            version_status=version.status.value,
            strategy=version.strategy,
            base_id=version.base_id,
            benchmark_id=benchmark.id,
            benchmark_name=benchmark.name,
            split=evaluation.split,
            metric=metric,
            value=value,
            metrics=evaluation.metrics,
            created_at=version.created_at,
            calibration=version.calibration,
            mergeability=version.mergeability,
        )
        for rank, (value, evaluation, version, benchmark) in enumerate(scored[:limit], start=1)
    ]
