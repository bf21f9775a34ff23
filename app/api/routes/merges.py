"""Merge jobs (admin): request a merge, follow its status."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from app.api.deps import AdminPrincipal, SessionDep
from app.api.routes.common import errors
from app.errors import InvalidInput, NotFound
from app.models import JobStatus
from app.schemas.merges import MergeAccepted, MergeCreate, MergeRead
from app.services import merges

router = APIRouter(prefix="/merges", tags=["merges"])


@router.post(
    "",
    status_code=202,
    response_model=MergeAccepted,
    responses=errors(InvalidInput, NotFound),
)
def request_merge(
    body: MergeCreate, session: SessionDep, actor: AdminPrincipal, response: Response
) -> MergeAccepted:
    """Ask for a merge of the selected vectors; the work runs on a worker.

    Everything is checked before anything is queued: a selection naming a rejected
    vector, an unvalidated one, or one made against another base is refused with 422.
    The same inputs asked for again give the same job (no second version).
    """
    job, _queued = merges.request_merge(session, body, actor=actor)
    response.headers["Location"] = f"/api/v1/merges/{job.id}"
    return MergeAccepted(job_id=job.id, status=job.status.value)


@router.get("", response_model=list[MergeRead], responses=errors())
def list_merges(
    session: SessionDep,
    _actor: AdminPrincipal,
    status: Annotated[JobStatus | None, Query()] = None,
    base_id: Annotated[str | None, Query()] = None,
) -> list[MergeRead]:
    """Merge jobs, newest first."""
    return [merges.to_read(j) for j in merges.list_jobs(session, status=status, base_id=base_id)]


@router.get("/{job_id}", response_model=MergeRead, responses=errors(NotFound))
def get_merge(job_id: str, session: SessionDep, _actor: AdminPrincipal) -> MergeRead:
    """A job's status, attempts, error and the version it made."""
    return merges.to_read(merges.get_job(session, job_id))
