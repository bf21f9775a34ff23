"""Merge jobs: one row per distinct merge request, keyed by the hash of its inputs."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import JSON, BigInteger, ForeignKey, String, Text, false
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base
from app.models.mixins import IdMixin, TimestampMixin, text_enum

if TYPE_CHECKING:
    from medvec.merging import MergeSpec


class JobStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class MergeJob(IdMixin, TimestampMixin, Base):
    """Idempotent by construction: ``inputs_hash`` is UNIQUE, so a repeated request or a
    redelivered task finds the existing job instead of making a second version.

    What the merge means is typed, one column each (``spec`` reads them back as a
    ``medvec.merging.MergeSpec``): ``params`` holds only the strategy's own parameters.
    """

    __tablename__ = "merge_jobs"

    base_id: Mapped[str] = mapped_column(
        ForeignKey("base_models.id", ondelete="RESTRICT"), index=True
    )
    strategy: Mapped[str] = mapped_column(String(50))
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    weighting: Mapped[str] = mapped_column(String(20), server_default="uniform")
    staleness_power: Mapped[float] = mapped_column(default=0.5, server_default="0.5")
    rebase: Mapped[bool] = mapped_column(default=False, server_default=false())
    lambda_grid: Mapped[list[float] | None] = mapped_column(JSON)
    seed: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    calibration_benchmark_id: Mapped[str | None] = mapped_column(
        ForeignKey("benchmarks.id", ondelete="SET NULL")
    )
    calibration_split: Mapped[str | None] = mapped_column(String(20))
    tuning: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    selection: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    benchmark_id: Mapped[str | None] = mapped_column(
        ForeignKey("benchmarks.id", ondelete="SET NULL")
    )
    inputs_hash: Mapped[str] = mapped_column(String(64), unique=True)
    status: Mapped[JobStatus] = mapped_column(text_enum(JobStatus), index=True)
    attempts: Mapped[int] = mapped_column(default=0)
    error: Mapped[str | None] = mapped_column(Text)
    version_id: Mapped[str | None] = mapped_column(
        ForeignKey("model_versions.id", ondelete="SET NULL")
    )
    requested_by: Mapped[str | None] = mapped_column(String(200))
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    waiting_since: Mapped[datetime | None]
    """Since when the job has waited for a service it needs (a secure merge's share
    holder, down or hung); cleared when the job ends."""
    retry_at: Mapped[datetime | None]
    """When a waiting job is tried again: the sweeper does not send it before."""

    @property
    def spec(self) -> MergeSpec:
        """The merge's meaning as the core library types it. A secure merge's shares are
        summed and decoded first (worker.secure_merge); what is then applied to the base is
        that one clear vector, at lambda 1."""
        from medvec.merging import MergeSpec

        if self.strategy.startswith("secure_"):
            return MergeSpec(strategy="task_arithmetic", params={"lambda": 1.0})
        return MergeSpec(
            strategy=self.strategy,
            params=dict(self.params),
            weighting=self.weighting,
            staleness_power=self.staleness_power,
            rebase=self.rebase,
            lambda_grid=tuple(self.lambda_grid) if self.lambda_grid is not None else None,
            seed=self.seed,
        )

    @property
    def calibration(self) -> dict[str, str] | None:
        """``{"benchmark_id", "split"}`` of the images the merge recalibrates on, or ``None``."""
        if self.calibration_benchmark_id is None or self.calibration_split is None:
            return None
        return {"benchmark_id": self.calibration_benchmark_id, "split": self.calibration_split}

    def record(self) -> dict[str, Any]:
        """Everything the job was asked and chose, as one document (versions keep it, and the
        API shows it as the job's ``params``)."""
        if self.strategy.startswith("secure_"):
            # a secure merge (app.services.secure_merges) is no MergeSpec strategy: its
            # params (weights, K, the share holder's answer) are the record
            out: dict[str, Any] = {**self.params, "calibration": self.calibration}
        else:
            out = {**self.spec.record(), "calibration": self.calibration}
        if self.tuning is not None:
            out["tuning"] = self.tuning
        return out
