"""Model versions (merged weights) and their lineage: which vectors, with which weights."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Float, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.db import Base
from app.models.mixins import IdMixin, TimestampMixin, text_enum


class VersionStatus(enum.StrEnum):
    CANDIDATE = "candidate"
    STAGING = "staging"
    PRODUCTION = "production"
    ARCHIVED = "archived"


class ModelVersion(IdMixin, TimestampMixin, Base):
    """A merged model.

    ``production_at`` is when it last became production; ``rolled_back_at`` marks a
    version taken out of production by a rollback, so a second rollback goes further back.
    ``calibration`` says on which images its BatchNorm statistics were recomputed (``None``:
    they are the merge's average); ``mergeability`` holds the mean pairwise cosine of its
    input vectors and its validation accuracy as combined and recalibrated.
    """

    __tablename__ = "model_versions"

    base_id: Mapped[str] = mapped_column(
        ForeignKey("base_models.id", ondelete="RESTRICT"), index=True
    )
    name: Mapped[str | None] = mapped_column(String(200))
    strategy: Mapped[str] = mapped_column(String(50))
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    size: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[VersionStatus] = mapped_column(text_enum(VersionStatus), index=True)
    production_at: Mapped[datetime | None]
    rolled_back_at: Mapped[datetime | None]
    calibration: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    mergeability: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    contributions: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    """Per input hospital, metric(all) - metric(without it) on a validation split."""

    inputs: Mapped[list[VersionInput]] = relationship(
        back_populates="version", lazy="raise", order_by="VersionInput.vector_id"
    )


class VersionInput(Base):
    """One vector that went into a version, with the weight the merge gave it."""

    __tablename__ = "version_inputs"

    version_id: Mapped[str] = mapped_column(
        ForeignKey("model_versions.id", ondelete="CASCADE"), primary_key=True
    )
    vector_id: Mapped[str] = mapped_column(
        ForeignKey("data_vectors.id", ondelete="RESTRICT"), primary_key=True, index=True
    )
    weight: Mapped[float] = mapped_column(Float)

    version: Mapped[ModelVersion] = relationship(back_populates="inputs", lazy="raise")
