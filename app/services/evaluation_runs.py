"""Asking for evaluations: the row is written ``queued`` in the same transaction that sends
its task (after the commit), so an evaluation whose message is lost is still known to
the database, and the sweeper sends it again (``worker.sweeper``).

A merged version is queued for evaluation on the test split and, where the benchmark
has one, the val split; an admin can ask for any split of any benchmark of the
version's task to be run again (``POST /versions/{id}/evaluations``).
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db import utcnow
from app.jobs import defer_job
from app.models import BaseModelRecord, Benchmark, Evaluation, EvaluationStatus, ModelVersion
from app.security import Actor
from app.services import audit
from app.services.errors import InvalidInput, NotFound
from app.tasks import EvaluateRun


def splits_for(benchmark: Benchmark) -> list[str]:
    """The splits a new version is evaluated on: test (what is reported) and, when the
    benchmark has one, val (what a version is chosen by, so that test stays unbiased)."""
    return ["test"] + (["val"] if benchmark.sizes.get("val") else [])


def find_evaluation(
    session: Session, version_id: str, benchmark_id: str, split: str
) -> Evaluation | None:
    """The row of (version, benchmark, split), locked for this transaction."""
    query = select(Evaluation).where(
        Evaluation.version_id == version_id,
        Evaluation.benchmark_id == benchmark_id,
        Evaluation.split == split,
    )
    return session.scalars(query.with_for_update()).first()


def queue_evaluation(
    session: Session, version_id: str, benchmark_id: str, split: str
) -> Evaluation:
    """Set the row of (version, benchmark, split) to ``queued`` with a fresh count of
    deliveries (making it if need be) and send its task once ``session`` commits."""
    row = find_evaluation(session, version_id, benchmark_id, split)
    if row is None:
        row = Evaluation(version_id=version_id, benchmark_id=benchmark_id, split=split)
        session.add(row)
    row.status, row.metrics, row.error = EvaluationStatus.QUEUED, {}, None
    row.attempts, row.lease_expires_at = 0, None
    session.flush()
    defer_job(session, EvaluateRun(version_id=version_id, benchmark_id=benchmark_id, split=split))
    return row


def queue_missing(
    session: Session, version_id: str, benchmarks: Iterable[Benchmark]
) -> list[Evaluation]:
    """Queue the evaluations of ``version_id`` on ``benchmarks`` that have no row yet (a
    redelivered merge task thus repairs a crash between its version and this call)."""
    existing = {
        (benchmark_id, split)
        for benchmark_id, split in session.execute(
            select(Evaluation.benchmark_id, Evaluation.split).where(
                Evaluation.version_id == version_id
            )
        )
    }
    return [
        queue_evaluation(session, version_id, benchmark.id, split)
        for benchmark in benchmarks
        for split in splits_for(benchmark)
        if (benchmark.id, split) not in existing
    ]


def lease_held(row: Evaluation) -> bool:
    """Running under a lease that has not expired: its worker may be at it still."""
    lease = row.lease_expires_at
    return row.status is EvaluationStatus.RUNNING and lease is not None and lease > utcnow()


def in_progress(row: Evaluation) -> bool:
    return row.status is EvaluationStatus.QUEUED or lease_held(row)


def request_evaluation(
    session: Session, actor: Actor, version_id: str, benchmark_id: str, split: str
) -> Evaluation:
    """Run the evaluation of a version on a benchmark split (again).

    One in progress is left alone and returned; a completed or failed one, or one whose
    worker died, is queued again (the audit log keeps the metrics it replaces).
    """
    version = session.get(ModelVersion, version_id)
    if version is None:
        raise NotFound(f"no version {version_id}", hint="list versions with GET /versions")
    benchmark = session.get(Benchmark, benchmark_id)
    if benchmark is None:
        raise NotFound(f"no benchmark {benchmark_id}", hint="list them with GET /benchmarks")
    _check_fits(session, version, benchmark, split)
    row = find_evaluation(session, version_id, benchmark_id, split)
    if row is not None and in_progress(row):
        return row
    replaced = dict(row.metrics) if row is not None else {}
    previous = row.status.value if row is not None else None
    row = queue_evaluation(session, version_id, benchmark_id, split)
    audit.record(
        session,
        actor,
        "evaluation.requested",
        target_type="evaluation",
        target_id=row.id,
        version_id=version_id,
        benchmark_id=benchmark_id,
        split=split,
        previous_status=previous,
        replaced_metrics=replaced or None,
    )
    return row


def _check_fits(session: Session, version: ModelVersion, benchmark: Benchmark, split: str) -> None:
    base = session.get(BaseModelRecord, version.base_id)
    classes = int(base.spec.get("num_classes", benchmark.num_classes)) if base else None
    if classes is not None and benchmark.num_classes != classes:
        raise InvalidInput(
            f"benchmark {benchmark.name} has {benchmark.num_classes} classes, "
            f"the version's model {classes}",
            hint="pick a benchmark of the version's task",
        )
    if not benchmark.sizes.get(split):
        raise InvalidInput(
            f"benchmark {benchmark.name} has no {split} split",
            hint=f"use one of {', '.join(s for s, n in benchmark.sizes.items() if n)}",
            splits=sorted(benchmark.sizes),
        )
