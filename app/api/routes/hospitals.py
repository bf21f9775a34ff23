"""Hospitals (admin)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, status

from app.api.deps import AdminPrincipal, SessionDep
from app.api.routes.common import errors
from app.errors import Conflict, InvalidInput, NotFound
from app.schemas.hospitals import HospitalCreate, HospitalRead
from app.services import hospitals

router = APIRouter(prefix="/hospitals", tags=["hospitals"])


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=HospitalRead,
    responses=errors(Conflict, InvalidInput),
)
def create_hospital(body: HospitalCreate, session: SessionDep, actor: AdminPrincipal) -> object:
    """Create a hospital; its tokens are minted with POST /tokens."""
    return hospitals.create_hospital(session, actor, body.name)


@router.get("", response_model=list[HospitalRead], responses=errors())
def list_hospitals(session: SessionDep, _actor: AdminPrincipal) -> object:
    """Every hospital."""
    return hospitals.list_hospitals(session)


@router.delete("/{hospital_id}", response_model=HospitalRead, responses=errors(NotFound))
def remove_hospital(
    hospital_id: str,
    session: SessionDep,
    actor: AdminPrincipal,
    reason: Annotated[str | None, Query(max_length=2000, description="why (audited)")] = None,
) -> object:
    """Remove a hospital: its tokens are revoked and its vectors, kept for the lineage, are
    no longer taken by default or automatic merges nor held in the running sums (the worker
    subtracts its share). Removing it again changes nothing."""
    return hospitals.remove_hospital(session, actor, hospital_id, reason)
