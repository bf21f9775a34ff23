"""Hospitals (admin)."""

from __future__ import annotations

from fastapi import APIRouter, status

from app.api.deps import AdminPrincipal, SessionDep
from app.api.routes.common import errors
from app.errors import Conflict, InvalidInput
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
