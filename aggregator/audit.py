"""The share holder's audit log: every state change and every released sum."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from aggregator.auth import AggActor
from aggregator.models import AggAuditEvent


def record(
    session: Session, actor: AggActor, action: str, target: str | None = None, **payload: Any
) -> None:
    session.add(AggAuditEvent(actor=actor.name, action=action, target=target, payload=payload))
    session.flush()
