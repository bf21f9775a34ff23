"""Quarantine (admin): vectors screening held back, and their release or rejection."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import AdminPrincipal, SessionDep
from app.api.routes.common import errors
from app.errors import Conflict, NotFound
from app.schemas.vectors import RejectRequest, ReleaseRequest, VectorRead
from app.services import quarantine

router = APIRouter(prefix="/quarantine", tags=["quarantine"])


@router.get("", response_model=list[VectorRead], responses=errors())
def list_quarantined(
    session: SessionDep, _actor: AdminPrincipal, base_id: str | None = None
) -> object:
    """Quarantined vectors, oldest first, each with its screening and the reason."""
    return quarantine.list_quarantined(session, base_id)


@router.post(
    "/{vector_id}/release", response_model=VectorRead, responses=errors(NotFound, Conflict)
)
def release(
    vector_id: str, session: SessionDep, actor: AdminPrincipal, body: ReleaseRequest | None = None
) -> object:
    """Release a quarantined vector: it is ``validated`` again and merges may take it
    (the auto-merge policy is asked at once). 409 when it is not quarantined."""
    return quarantine.release(session, actor, vector_id, body.note if body else None)


@router.post("/{vector_id}/reject", response_model=VectorRead, responses=errors(NotFound, Conflict))
def reject(
    vector_id: str, body: RejectRequest, session: SessionDep, actor: AdminPrincipal
) -> object:
    """Reject a quarantined vector for good; the hospital sees ``reason``."""
    return quarantine.reject(session, actor, vector_id, body.reason)
