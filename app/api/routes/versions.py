"""Model versions: list (admin), read and download (hospitals: production only),
promotion, rollback and new generations (admin)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from sqlalchemy.orm import Session

from app.api.deps import AdminPrincipal, Principal, SessionDep, SettingsDep, StorageDep
from app.api.routes.common import BINARY_RESPONSE, blob_response, errors
from app.errors import Conflict, GateFailed, InvalidInput, NotFound, PreconditionFailed
from app.models import ModelVersion, VersionStatus
from app.schemas.bases import BaseRead
from app.schemas.versions import (
    ContributionsRead,
    PromoteRequest,
    VersionInputRead,
    VersionRead,
)
from app.security import Actor
from app.services import cards, contributions, versions
from app.services.gates import policy_of
from app.templating import render

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


@router.get(
    "/{version_id}/card",
    response_class=Response,
    responses={200: {"content": {"text/markdown": {}}}, **errors(NotFound)},
)
def model_card(version_id: str, session: SessionDep, actor: Principal) -> Response:
    """The version's model card in Markdown: intended use, the hospitals and samples behind
    it (unnamed for hospital readers), the merge, metrics with 95% bootstrap intervals per
    class and calibration, the privacy spent, lineage and known limitations."""
    card = cards.model_card(session, actor, version_id)
    text = render("card.md", card=card)
    return Response(text, media_type="text/markdown; charset=utf-8")


@router.post(
    "/{version_id}/promote",
    response_model=VersionRead,
    responses=errors(NotFound, Conflict, GateFailed, PreconditionFailed, InvalidInput),
)
def promote(
    version_id: str,
    body: PromoteRequest,
    session: SessionDep,
    settings: SettingsDep,
    actor: AdminPrincipal,
) -> VersionRead:
    """Promote to ``staging`` or ``production``.

    Production needs the promotion gate: on a benchmark split both have completed
    evaluations of (``val`` first), the candidate is no worse than production on the
    gate metrics, overall (and per class when ``MEDVEC_GATE_CLASS_METRICS`` names any),
    within ``MEDVEC_GATE_*`` tolerances, and every per-class sensitivity is at or above
    the floor. A refusal is a 409 ``gate_failed`` whose ``detail.checks`` lists every
    comparison. ``force`` overrides (audited); the previous production version is
    archived.
    """
    stage = VersionStatus(body.stage)
    version = versions.promote(
        session, actor, version_id, stage=stage, force=body.force, gate=policy_of(settings)
    )
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


@router.post(
    "/{version_id}/contributions",
    status_code=202,
    responses=errors(NotFound, InvalidInput),
)
def request_contributions(
    version_id: str, session: SessionDep, actor: AdminPrincipal
) -> dict[str, str]:
    """Compute each input hospital's contribution (metric with everyone minus metric
    without it, on the validation split) on a worker; read it with GET."""
    version = contributions.request_contributions(session, actor, version_id)
    return {"version_id": version.id, "status": "queued"}


@router.get(
    "/{version_id}/contributions",
    response_model=ContributionsRead,
    responses=errors(NotFound, PreconditionFailed),
)
def get_contributions(version_id: str, session: SessionDep, actor: Principal) -> object:
    """Contributions of a linear version's hospitals: all of them for an admin, its own
    share for a hospital whose vector went into it."""
    return contributions.read_contributions(session, actor, version_id)
