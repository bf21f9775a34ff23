"""Model versions: list (admin), read and download (hospitals: production only),
promotion, rollback and new generations (admin)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from sqlalchemy.orm import Session

from app.api.deps import AdminPrincipal, Principal, SessionDep, StorageDep
from app.api.routes.common import BINARY_RESPONSE, blob_response, errors
from app.errors import Conflict, InvalidInput, NotFound, PreconditionFailed
from app.models import ModelVersion, VersionStatus
from app.schemas.bases import BaseRead
from app.schemas.versions import PromoteRequest, VersionInputRead, VersionRead
from app.security import Actor
from app.services import versions

router = APIRouter(prefix="/versions", tags=["versions"])


def _read(version: ModelVersion, actor: Actor, session: Session) -> VersionRead:
    inputs = versions.visible_inputs(session, actor, version)
    read = VersionRead.model_validate(version)
    return read.model_copy(update={"inputs": [VersionInputRead.model_validate(i) for i in inputs]})


@router.get("", response_model=list[VersionRead], responses=errors())
def list_versions(
    session: SessionDep, actor: AdminPrincipal, status: VersionStatus | None = None
) -> list[VersionRead]:
    """Every version with its lineage, newest first."""
    return [_read(v, actor, session) for v in versions.list_versions(session, status)]


@router.post("/rollback", response_model=VersionRead, responses=errors(Conflict))
def rollback(session: SessionDep, actor: AdminPrincipal) -> VersionRead:
    """Archive the production version and restore the one before it."""
    return _read(versions.rollback(session, actor), actor, session)


@router.get("/{version_id}", response_model=VersionRead, responses=errors(NotFound))
def get_version(version_id: str, session: SessionDep, actor: Principal) -> VersionRead:
    """A version by id, or ``production``. Hospitals can read only the production one."""
    return _read(versions.get_version(session, actor, version_id), actor, session)


@router.get(
    "/{version_id}/download",
    response_class=Response,
    responses={**BINARY_RESPONSE, **errors(NotFound)},
)
def download_version(
    version_id: str, session: SessionDep, store: StorageDep, actor: Principal
) -> object:
    """The version's model file, with ``X-Content-SHA256``."""
    version = versions.get_version(session, actor, version_id)
    return blob_response(store, version.sha256, f"version-{version.id}.safetensors")


@router.post(
    "/{version_id}/promote",
    response_model=VersionRead,
    responses=errors(NotFound, Conflict, PreconditionFailed, InvalidInput),
)
def promote(
    version_id: str, body: PromoteRequest, session: SessionDep, actor: AdminPrincipal
) -> VersionRead:
    """Promote to ``staging`` or ``production``.

    Production needs a completed evaluation unless ``force`` (recorded in the audit log);
    the previous production version is archived.
    """
    stage = VersionStatus(body.stage)
    version = versions.promote(session, actor, version_id, stage=stage, force=body.force)
    return _read(version, actor, session)


@router.post(
    "/{version_id}/generation",
    status_code=201,
    response_model=BaseRead,
    responses=errors(NotFound, Conflict),
)
def start_generation(version_id: str, session: SessionDep, actor: AdminPrincipal) -> object:
    """Start a new generation: the version becomes the current base (the old base stays)."""
    return versions.start_generation(session, actor, version_id)
