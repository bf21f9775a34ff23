"""The audit log (admin)."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import AdminPrincipal, SessionDep
from app.api.routes.common import PageLimit, PageOffset, errors
from app.schemas.audit import AuditEventRead
from app.services import audit

router = APIRouter(prefix="/audit", tags=["audit"])


@router.get("", response_model=list[AuditEventRead], responses=errors())
def list_audit_events(
    session: SessionDep,
    _actor: AdminPrincipal,
    action: str | None = None,
    target_id: str | None = None,
    limit: PageLimit = 100,
    offset: PageOffset = 0,
) -> object:
    """Audit events, newest first: who did what to which object, from which address."""
    return audit.list_events(
        session, action=action, target_id=target_id, limit=limit, offset=offset
    )
