"""Merge jobs (admin): request a merge, follow its status."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from app.api.deps import AdminPrincipal, SessionDep
from app.api.routes.common import errors
from app.errors import InvalidInput, NotFound
from app.models import JobStatus, MergeJob
from app.schemas.merges import MergeAccepted, MergeCreate, MergeRead
from app.services import merges
from medvec.merging.policy import StalePolicy

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
    job, _queued = merges.request_merge(session, to_request(body), actor=actor)
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
    return [to_read(j) for j in merges.list_jobs(session, status=status, base_id=base_id)]


@router.get("/{job_id}", response_model=MergeRead, responses=errors(NotFound))
def get_merge(job_id: str, session: SessionDep, _actor: AdminPrincipal) -> MergeRead:
    """A job's status, attempts, error and the version it made."""
    return to_read(merges.get_job(session, job_id))


def to_request(body: MergeCreate) -> merges.MergeRequest:
    return merges.MergeRequest(
        base_id=body.base_id,
        strategy=body.strategy,
        params=body.params,
        vector_ids=body.selection.vector_ids,
        rebase=body.selection.stale is StalePolicy.WEIGHT,
        staleness_power=body.selection.staleness_power,
        benchmark_id=body.benchmark_id,
        calibration=body.calibration,
        seed=body.seed,
    )


def to_read(job: MergeJob) -> MergeRead:
    return MergeRead(
        id=job.id,
        job_id=job.id,
        base_id=job.base_id,
        strategy=job.strategy,
        params=job.record(),
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
        waiting_since=job.waiting_since,
        retry_at=job.retry_at,
    )
