"""Running sums: per base and weighting rule, ``sum_i w_i tau_i`` over every hospital's
current vector, as a float64 blob, with the members it holds (its own lineage)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Float, ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.db import Base
from app.models.mixins import IdMixin, TimestampMixin


class RunningSum(IdMixin, TimestampMixin, Base):
    """The current sums of ``base_id`` under ``weighting`` (``samples`` or ``uniform``).

    ``members`` are the vectors it holds with their weights; ``revision`` counts its
    updates. The float64 sums themselves are derived data in each worker's store
    (``BlobStore.derived_path``): a worker whose file does not hold exactly these
    members rebuilds it from the vectors. ``drift`` is the largest relative difference
    the last check (``checked_at``) found between the running file and a full recompute.
    """

    __tablename__ = "running_sums"
    __table_args__ = (UniqueConstraint("base_id", "weighting"),)

    base_id: Mapped[str] = mapped_column(ForeignKey("base_models.id", ondelete="CASCADE"))
    weighting: Mapped[str] = mapped_column(String(20))
    revision: Mapped[int] = mapped_column(default=0)
    total_weight: Mapped[float] = mapped_column(Float)
    checked_at: Mapped[datetime | None]
    drift: Mapped[float | None] = mapped_column(Float)

    members: Mapped[list[RunningSumMember]] = relationship(
        back_populates="sums", lazy="raise", cascade="all, delete-orphan"
    )


class RunningSumMember(Base):
    """One vector held by a running sum, with the weight its share was added with."""

    __tablename__ = "running_sum_members"

    sums_id: Mapped[str] = mapped_column(
        ForeignKey("running_sums.id", ondelete="CASCADE"), primary_key=True
    )
    vector_id: Mapped[str] = mapped_column(
        ForeignKey("data_vectors.id", ondelete="RESTRICT"), primary_key=True, index=True
    )
    weight: Mapped[float] = mapped_column(Float)

    sums: Mapped[RunningSum] = relationship(back_populates="members", lazy="raise")
