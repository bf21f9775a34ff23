"""Model versions: listing, promotion to staging or production, rollback, new generations."""

from __future__ import annotations

from sqlalchemy import Select, exists, select
from sqlalchemy.orm import Session, selectinload

from app.db import utcnow
from app.errors import Conflict, InvalidInput, NotFound, PreconditionFailed
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
from app.services import audit

PRODUCTION = "production"
STAGES = (VersionStatus.STAGING, VersionStatus.PRODUCTION)


def _with_inputs() -> Select[tuple[ModelVersion]]:
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
    session: Session, actor: Actor, version_id: str, *, stage: VersionStatus, force: bool
) -> ModelVersion:
    """Move a version to staging or production (the previous production one is archived)."""
    if stage not in STAGES:
        raise InvalidInput(
            f"cannot promote to {stage.value!r}", hint="stage is 'staging' or 'production'"
        )
    version = get_version(session, actor, version_id)
    previous = version.status
    forced = False
    if previous is stage:
        return version
    if stage is VersionStatus.STAGING and previous is VersionStatus.PRODUCTION:
        raise Conflict(
            f"version {version.id} is in production",
            hint="roll back with POST /api/v1/versions/rollback instead",
        )
    if stage is VersionStatus.PRODUCTION:
        forced = not has_completed_evaluation(session, version.id)
        if forced and not force:
            raise PreconditionFailed(
                f"version {version.id} has no completed evaluation",
                hint="evaluate it on a benchmark first, or promote with force=true (audited)",
            )
        current = production_version(session)
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
    )
    return version


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
    """Make a version the base of a new generation; the old base stays readable."""
    version = get_version(session, actor, version_id)
    taken = session.scalar(
        select(BaseModelRecord).where(
            (BaseModelRecord.source_version_id == version.id)
            | (BaseModelRecord.sha256 == version.sha256)
        )
    )
    if taken is not None:
        raise Conflict(
            f"version {version.id} is already base {taken.id}",
            hint="pull that base",
            base_id=taken.id,
        )
    parent = session.get(BaseModelRecord, version.base_id)
    assert parent is not None
    top = (
        session.scalar(
            select(BaseModelRecord.generation).order_by(BaseModelRecord.generation.desc()).limit(1)
        )
        or 0
    )
    generation = max(parent.generation, top) + 1
    base = BaseModelRecord(
        name=f"{parent.name}-g{generation}",
        arch=parent.arch,
        spec=parent.spec,
        provenance={
            "source_version_id": version.id,
            "strategy": version.strategy,
            "parent_base_id": parent.id,
        },
        sha256=version.sha256,
        size=version.size,
        generation=generation,
        parent_id=parent.id,
        source_version_id=version.id,
    )
    session.add(base)
    session.flush()
    audit.record(
        session,
        actor,
        "base.generation_started",
        target_type="base",
        target_id=base.id,
        version_id=version.id,
        generation=generation,
    )
    return base
