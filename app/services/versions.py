"""Model versions: listing, promotion to staging or production, rollback, new generations."""

from __future__ import annotations

from sqlalchemy import Select, exists, select
from sqlalchemy.orm import Session, selectinload

from app.db import utcnow
from app.models import (
    BaseModelRecord,
    DataVector,
    Evaluation,
    EvaluationStatus,
    ModelVersion,
    VersionInput,
    VersionStatus,
)
from app.security import Actor
from app.services import audit, generations
from app.services.errors import Conflict, GateFailed, InvalidInput, NotFound, PreconditionFailed
from app.services.gates import GateOutcome, describe_failures, evaluate_gate
from medvec.gates import GatePolicy

PRODUCTION = "production"
STAGES = (VersionStatus.STAGING, VersionStatus.PRODUCTION)


def _with_inputs() -> Select[ModelVersion]:
    return select(ModelVersion).options(selectinload(ModelVersion.inputs))


def list_versions(session: Session, status: VersionStatus | None = None) -> list[ModelVersion]:
    query = _with_inputs().order_by(ModelVersion.created_at.desc(), ModelVersion.id)
    if status:
        query = query.where(ModelVersion.status == status)
    return list(session.scalars(query))


def production_version(session: Session) -> ModelVersion | None:
    query = _with_inputs().where(ModelVersion.status == VersionStatus.PRODUCTION)
    return session.scalars(query.limit(1)).first()


def get_version(session: Session, actor: Actor, version_id: str) -> ModelVersion:
    """A version by id, or ``production``; hospitals see only the production version."""
    if version_id == PRODUCTION:
        version = production_version(session)
        if version is None:
            raise NotFound(
                "no version is in production yet",
                hint="an admin promotes one with POST /api/v1/versions/{id}/promote",
            )
        return version
    version = session.scalars(_with_inputs().where(ModelVersion.id == version_id)).first()
    if version is None or (not actor.is_admin and version.status is not VersionStatus.PRODUCTION):
        raise NotFound(
            f"no version {version_id}",
            hint="hospitals can read the production version: /versions/production",
        )
    return version


def visible_inputs(session: Session, actor: Actor, version: ModelVersion) -> list[VersionInput]:
    """The lineage ``actor`` may see: all of it for an admin; for a hospital only the
    inputs that are its own vectors (others' vector ids are never shown), so that it can
    tell which of its vectors a production model holds and with what weight."""
    if actor.is_admin:
        return list(version.inputs)
    if actor.hospital_id is None or not version.inputs:
        return []
    ids = [i.vector_id for i in version.inputs]
    query = select(DataVector.id).where(
        DataVector.hospital_id == actor.hospital_id, DataVector.id.in_(ids)
    )
    own = set(session.scalars(query))
    return [i for i in version.inputs if i.vector_id in own]


def has_completed_evaluation(session: Session, version_id: str) -> bool:
    query = exists().where(
        Evaluation.version_id == version_id, Evaluation.status == EvaluationStatus.COMPLETED
    )
    return bool(session.scalar(select(query)))


def promote(
    session: Session,
    actor: Actor,
    version_id: str,
    *,
    stage: VersionStatus,
    force: bool,
    gate: GatePolicy | None = None,
) -> ModelVersion:
    """Move a version to staging or production (the previous production one is archived).

    Production needs the promotion gate passed (``app.services.gates``) unless ``force``;
    the audit record says whether it was forced and holds the gate's checks.
    """
    if stage not in STAGES:
        raise InvalidInput(
            f"cannot promote to {stage.value!r}", hint="stage is 'staging' or 'production'"
        )
    version = get_version(session, actor, version_id)
    previous = version.status
    forced = False
    outcome: GateOutcome | None = None
    if previous is stage:
        return version
    if stage is VersionStatus.STAGING and previous is VersionStatus.PRODUCTION:
        raise Conflict(
            f"version {version.id} is in production",
            hint="roll back with POST /api/v1/versions/rollback instead",
        )
    if stage is VersionStatus.PRODUCTION:
        current = production_version(session)
        outcome = evaluate_gate(session, version, current, gate or GatePolicy())
        forced = outcome is None or not outcome.passed
        if forced and not force:
            _refuse(session, version, current, outcome)
        if current is not None:
            current.status = VersionStatus.ARCHIVED
            audit.record(
                session,
                actor,
                "version.archived",
                target_type="version",
                target_id=current.id,
                replaced_by=version.id,
            )
        session.flush()
        version.production_at = utcnow()
        version.rolled_back_at = None
    version.status = stage
    session.flush()
    audit.record(
        session,
        actor,
        "version.promoted",
        target_type="version",
        target_id=version.id,
        stage=stage.value,
        previous=previous.value,
        force=force,
        forced=forced,
        **({"gate": outcome.detail()} if outcome is not None else {}),
    )
    return version


def _refuse(
    session: Session,
    version: ModelVersion,
    current: ModelVersion | None,
    outcome: GateOutcome | None,
) -> None:
    """Raise why ``version`` may not replace ``current`` in production."""
    if not has_completed_evaluation(session, version.id):
        raise PreconditionFailed(
            f"version {version.id} has no completed evaluation",
            hint="evaluate it on a benchmark first, or promote with force=true (audited)",
        )
    if outcome is None:
        assert current is not None
        raise PreconditionFailed(
            f"version {version.id} and production version {current.id} have no completed "
            "evaluation on a common benchmark split, so the promotion gate cannot compare them",
            hint="evaluate both on the same benchmark (POST /api/v1/versions/{id}/evaluations), "
            "or promote with force=true (audited)",
            production_id=current.id,
        )
    against = f"production version {current.id}" if current else "the sensitivity floor"
    raise GateFailed(
        f"version {version.id} fails the promotion gate against {against} on "
        f"{outcome.split} of benchmark {outcome.benchmark_id}: {describe_failures(outcome)}",
        hint="improve the candidate, or promote with force=true (audited)",
        **outcome.detail(),
    )


def rollback(session: Session, actor: Actor) -> ModelVersion:
    """Archive the production version and restore the one in production before it."""
    current = production_version(session)
    if current is None:
        raise Conflict("no version is in production", hint="nothing to roll back")
    query = (
        _with_inputs()
        .where(
            ModelVersion.status == VersionStatus.ARCHIVED,
            ModelVersion.production_at.is_not(None),
            ModelVersion.rolled_back_at.is_(None),
            ModelVersion.id != current.id,
        )
        .order_by(ModelVersion.production_at.desc())
    )
    restored = session.scalars(query.limit(1)).first()
    if restored is None:
        raise Conflict(
            f"no earlier production version to restore before {current.id}",
            hint="promote another version instead",
        )
    current.status = VersionStatus.ARCHIVED
    current.rolled_back_at = utcnow()
    session.flush()
    restored.status = VersionStatus.PRODUCTION
    session.flush()
    audit.record(
        session,
        actor,
        "version.rolled_back",
        target_type="version",
        target_id=current.id,
        restored=restored.id,
    )
    return restored


def start_generation(session: Session, actor: Actor, version_id: str) -> BaseModelRecord:
    """Make a version the base of a new generation (``generations.start_generation``)."""
    return generations.start_generation(session, actor, get_version(session, actor, version_id))
