"""Contributions of each hospital to a version: asked for by an admin, computed by a worker
(``medvec.contributions.run``), read by an admin (all) or a hospital (its own share only)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.jobs import defer_job
from app.models import DataVector, ModelVersion, VersionInput
from app.security import Actor
from app.services import audit
from app.services.errors import InvalidInput, NotFound, PreconditionFailed
from app.services.secure_shares import is_secure_version
from app.tasks import ContributionsRun


def _version(session: Session, version_id: str) -> ModelVersion:
    version = session.get(ModelVersion, version_id)
    if version is None:
        raise NotFound(f"no version {version_id}", hint="list them with GET /api/v1/versions")
    return version


def not_computable(version: ModelVersion) -> str | None:
    """Why ``version`` can have no contributions, when its record already says so."""
    if is_secure_version(version):
        return (
            "it was merged in secure mode: the registry only ever held the hospitals' "
            "vectors as shares and reconstructed their sum, so no hospital's share can be "
            "taken out of it"
        )
    return None


def request_contributions(session: Session, actor: Actor, version_id: str) -> ModelVersion:
    """Queue the computation of ``version_id``'s contributions (linear strategies only)."""
    version = _version(session, version_id)
    why = not_computable(version)
    if why is not None:
        raise InvalidInput(
            f"version {version.id} has no per-hospital contributions: {why}",
            hint="contributions exist for weighted_mean and task_arithmetic versions",
        )
    from medvec.merging import get_strategy

    if not get_strategy(version.strategy).is_linear:
        raise InvalidInput(
            f"version {version.id} was merged with {version.strategy}, which is not linear: "
            "a hospital's share cannot be taken out of it",
            hint="contributions exist for weighted_mean and task_arithmetic versions",
        )
    audit.record(
        session, actor, "contributions.requested", target_type="model_version", target_id=version.id
    )
    defer_job(session, ContributionsRun(version_id=version.id))
    return version


def read_contributions(session: Session, actor: Actor, version_id: str) -> dict[str, Any]:
    """The computed contributions: every hospital's for an admin; for a hospital, its own
    share of a version it contributed to (``NotFound`` otherwise, as for a hidden version)."""
    version = _version(session, version_id)
    if not actor.is_admin and not _contributed(session, version.id, actor.hospital_id):
        raise NotFound(
            f"no version {version.id} with a contribution of yours",
            hint="a hospital sees its own share of the versions its vectors went into",
        )
    document = version.contributions
    if document is None:
        raise PreconditionFailed(
            f"the contributions of version {version.id} are not computed yet",
            hint="an admin asks for them with POST /api/v1/versions/{id}/contributions",
        )
    if actor.is_admin:
        return dict(document)
    own = [h for h in document["hospitals"] if h["hospital_id"] == actor.hospital_id]
    return {**document, "hospitals": own}


def _contributed(session: Session, version_id: str, hospital_id: str | None) -> bool:
    query = (
        select(DataVector.id)
        .join(VersionInput, VersionInput.vector_id == DataVector.id)
        .where(VersionInput.version_id == version_id, DataVector.hospital_id == hospital_id)
        .limit(1)
    )
    return hospital_id is not None and session.scalar(query) is not None
