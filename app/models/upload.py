"""Resumable upload sessions: the bytes live in a part file, the bookkeeping here."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base
from app.models.mixins import IdMixin, TimestampMixin, text_enum


class UploadStatus(enum.StrEnum):
    OPEN = "open"
    COMPLETED = "completed"
    EXPIRED = "expired"


class UploadSession(IdMixin, TimestampMixin, Base):
    __tablename__ = "upload_sessions"

    hospital_id: Mapped[str] = mapped_column(
        ForeignKey("hospitals.id", ondelete="CASCADE"), index=True
    )
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    size: Mapped[int] = mapped_column(BigInteger)
    offset: Mapped[int] = mapped_column(BigInteger, default=0)
    status: Mapped[UploadStatus] = mapped_column(text_enum(UploadStatus), index=True)
    expires_at: Mapped[datetime] = mapped_column(index=True)
    vector_id: Mapped[str | None] = mapped_column(
        ForeignKey("data_vectors.id", ondelete="SET NULL")
    )
