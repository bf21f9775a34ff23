"""Secure merges (admin): a linear merge of shares that only the two servers together sum."""

from __future__ import annotations

from fastapi import APIRouter, Response

from app.api.deps import AdminPrincipal, SessionDep, SettingsDep
from app.api.routes.common import errors
from app.errors import InvalidInput, NotFound, PreconditionFailed
from app.schemas.merges import MergeAccepted
from app.schemas.secure import SecureMergeCreate
from app.services import secure_merges

router = APIRouter(prefix="/secure", tags=["secure"])


@router.post(
    "/merges",
    status_code=202,
    response_model=MergeAccepted,
    responses=errors(InvalidInput, NotFound, PreconditionFailed),
)
def request_secure_merge(
    body: SecureMergeCreate,
    session: SessionDep,
    settings: SettingsDep,
    actor: AdminPrincipal,
    response: Response,
) -> MergeAccepted:
    """Merge hospitals' shares: the worker asks the share holder for the sum of its shares,
    adds the registry's, and decodes only the sum. 422 for a share of a removed hospital,
    an id named twice or below K hospitals (a hospital's two shares count once); the job
    fails with the share holder's reason when it refuses the set (follow it at
    /api/v1/merges/{id}).
    """
    job, _queued = secure_merges.request_secure_merge(session, body, actor=actor, settings=settings)
    response.headers["Location"] = f"/api/v1/merges/{job.id}"
    return MergeAccepted(job_id=job.id, status=job.status.value)
