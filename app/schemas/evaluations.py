"""Evaluations of model versions on benchmarks, and the leaderboard built from them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

from app.schemas.versions import CalibrationRead, MergeabilityRead

#: metrics a leaderboard can rank by (higher is better, except ``ece``)
RANKABLE_METRICS = ("accuracy", "balanced_accuracy", "auc_macro", "f1_macro", "ece")


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
    created_at: datetime
    updated_at: datetime


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
