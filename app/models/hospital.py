"""Hospitals and the API tokens that act for them (or for an admin)."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.db import Base
from app.models.mixins import CreatedMixin, IdMixin, text_enum


class Role(enum.StrEnum):
    ADMIN = "admin"
    HOSPITAL = "hospital"


class Hospital(IdMixin, CreatedMixin, Base):
    """A site that pushes vectors. Removing it (``removed_at``) keeps its row and vectors
    for the lineage and the audit log, revokes its tokens, and takes its vectors out of
    default and automatic merges and of the running sums."""

    __tablename__ = "hospitals"

    name: Mapped[str] = mapped_column(String(200), unique=True)
    removed_at: Mapped[datetime | None]

    tokens: Mapped[list[ApiToken]] = relationship(back_populates="hospital", lazy="raise")


class ApiToken(IdMixin, CreatedMixin, Base):
    """A bearer token; only its sha256 is stored. Revoked tokens are kept for the audit log."""

    __tablename__ = "api_tokens"

    name: Mapped[str] = mapped_column(String(200))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[Role] = mapped_column(text_enum(Role))
    hospital_id: Mapped[str | None] = mapped_column(
        ForeignKey("hospitals.id", ondelete="RESTRICT"), index=True
    )
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]

    hospital: Mapped[Hospital | None] = relationship(back_populates="tokens", lazy="raise")
