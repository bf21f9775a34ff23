"""Data vectors pushed by hospitals, one row per accepted file."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base
from app.models.mixins import IdMixin, TimestampMixin, text_enum


class VectorStatus(enum.StrEnum):
    VALIDATED = "validated"
    REJECTED = "rejected"
    SUPERSEDED = "superseded"
    QUARANTINED = "quarantined"
    SHARE = "share"
    """share A of a secure push (``medvec push --secure``): never merged in the clear"""
    SHARE_SUPERSEDED = "share_superseded"


class DataVector(IdMixin, TimestampMixin, Base):
    """A hospital's data vector for one base.

    The latest vector of a hospital for a base is the one in status ``validated``:
    accepting a new one marks the previous ``superseded`` (``superseded_by_id``).
    Screening (``worker.screen``) fills ``screening`` and ``screened_at`` after
    acceptance and moves an outlier to ``quarantined``, with the why in ``reason``,
    until an admin releases it (back to ``validated``) or rejects it.
    """

    __tablename__ = "data_vectors"
    __table_args__ = (
        UniqueConstraint("hospital_id", "sha256"),
        Index("ix_data_vectors_hospital_base_status", "hospital_id", "base_id", "status"),
    )

    hospital_id: Mapped[str] = mapped_column(ForeignKey("hospitals.id", ondelete="RESTRICT"))
    base_id: Mapped[str] = mapped_column(
        ForeignKey("base_models.id", ondelete="RESTRICT"), index=True
    )
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    size: Mapped[int] = mapped_column(BigInteger)
    norm: Mapped[float | None]
    num_samples: Mapped[int]
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JSON)
    status: Mapped[VectorStatus] = mapped_column(text_enum(VectorStatus), index=True)
    reason: Mapped[str | None] = mapped_column(Text)
    superseded_by_id: Mapped[str | None] = mapped_column(
        ForeignKey("data_vectors.id", ondelete="SET NULL")
    )
    superseded_at: Mapped[datetime | None]
    screening: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    screened_at: Mapped[datetime | None]
