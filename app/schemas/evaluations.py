"""Evaluations of model versions on benchmarks, and the leaderboard built from them."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

from app.schemas.common import Id, RequestModel
from app.schemas.versions import CalibrationRead, MergeabilityRead

#: metrics a leaderboard can rank by (higher is better, except ``ece``)
RankMetric = Literal["accuracy", "balanced_accuracy", "auc_macro", "f1_macro", "ece"]
RANKABLE_METRICS: tuple[str, ...] = get_args(RankMetric)


class EvaluationRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    version_id: str
    benchmark_id: str
    benchmark_name: str | None = None
    split: str
    status: str
    metrics: dict[str, Any]
    error: str | None
    attempts: int = Field(description="deliveries to a worker so far (a killed one counts)")
    lease_expires_at: datetime | None = Field(
        description="while running: when the worker's lease ends; past it the evaluation "
        "is taken for dead and queued again"
    )
    created_at: datetime
    updated_at: datetime


class EvaluationCreate(RequestModel):
    """Run (again) the evaluation of a version on one split of a benchmark."""

    model_config = ConfigDict(extra="forbid")

    benchmark_id: Id = Field(max_length=36)
    split: Literal["train", "val", "test"] = "test"


class LeaderboardRow(BaseModel):
    rank: int
    version_id: str
    version_status: str
    strategy: str
    base_id: str
    benchmark_id: str
    benchmark_name: str
    split: str
    metric: str
    value: float
    metrics: dict[str, Any]
    created_at: datetime
    calibration: CalibrationRead | None = None
    mergeability: MergeabilityRead | None = None
