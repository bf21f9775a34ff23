"""The audit log (admin)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from app.api.deps import AdminPrincipal, SessionDep
from app.api.routes.common import errors
from app.schemas.audit import AuditEventRead
from app.services import audit

router = APIRouter(prefix="/audit", tags=["audit"])


@router.get("", response_model=list[AuditEventRead], responses=errors())
def list_audit_events(
    session: SessionDep,
    _actor: AdminPrincipal,
    action: str | None = None,
    target_id: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> object:
    """Audit events, newest first: who did what to which object, from which address."""
    return audit.list_events(
        session, action=action, target_id=target_id, limit=limit, offset=offset
    )
