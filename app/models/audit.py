"""The audit log: every state change, who made it, from which address."""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, String
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base
from app.models.mixins import CreatedMixin, IdMixin


class AuditEvent(IdMixin, CreatedMixin, Base):
    """Append-only. Actor ids are kept as plain strings so events outlive what they name."""

    __tablename__ = "audit_events"

    actor: Mapped[str] = mapped_column(String(200))
    actor_token_id: Mapped[str | None] = mapped_column(String(36), index=True)
    hospital_id: Mapped[str | None] = mapped_column(String(36), index=True)
    action: Mapped[str] = mapped_column(String(100), index=True)
    target_type: Mapped[str | None] = mapped_column(String(50))
    target_id: Mapped[str | None] = mapped_column(String(64), index=True)
    ip: Mapped[str | None] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
