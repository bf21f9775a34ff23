"""Evaluations of a version on a benchmark split; metrics as JSON (``medvec.metrics.Metrics``).

A row exists from the moment an evaluation is asked for (``queued``). A worker that
starts it counts the delivery in ``attempts`` and takes a lease until
``lease_expires_at``; a row still ``running`` past its lease belonged to a killed
worker, and the sweeper sends it again (``worker.sweeper``).
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base
from app.models.mixins import IdMixin, TimestampMixin, text_enum


class EvaluationStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"


class Evaluation(IdMixin, TimestampMixin, Base):
    __tablename__ = "evaluations"
    __table_args__ = (UniqueConstraint("version_id", "benchmark_id", "split"),)

    version_id: Mapped[str] = mapped_column(
        ForeignKey("model_versions.id", ondelete="CASCADE"), index=True
    )
    benchmark_id: Mapped[str] = mapped_column(
        ForeignKey("benchmarks.id", ondelete="RESTRICT"), index=True
    )
    split: Mapped[str] = mapped_column(String(20))
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[EvaluationStatus] = mapped_column(text_enum(EvaluationStatus), index=True)
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(default=0, server_default="0")
    lease_expires_at: Mapped[datetime | None]
