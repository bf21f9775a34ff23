"""The audit log: one row per state change, written in the same transaction as the change."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import AuditEvent
from app.security import Actor


def record(
    session: Session,
    actor: Actor,
    action: str,
    *,
    target_type: str | None = None,
    target_id: str | None = None,
    **payload: Any,
) -> AuditEvent:
    event = AuditEvent(
        actor=actor.name,
        actor_token_id=actor.token_id,
        hospital_id=actor.hospital_id,
        action=action,
        target_type=target_type,
        target_id=target_id,
        ip=actor.ip,
        payload=payload,
    )
    session.add(event)
    session.flush()
    return event


def list_events(
    session: Session,
    *,
    action: str | None = None,
    target_id: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[AuditEvent]:
    query = select(AuditEvent).order_by(AuditEvent.created_at.desc(), AuditEvent.id)
    if action:
        query = query.where(AuditEvent.action == action)
    if target_id:
        query = query.where(AuditEvent.target_id == target_id)
    return list(session.scalars(query.limit(limit).offset(offset)))
