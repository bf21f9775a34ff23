"""Audit events."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from app.schemas.common import ReadModel


class AuditEventRead(ReadModel):
    id: str
    created_at: datetime
    actor: str
    actor_token_id: str | None
    hospital_id: str | None
    action: str
    target_type: str | None
    target_id: str | None
    ip: str | None
    payload: dict[str, Any]
