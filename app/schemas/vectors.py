"""Data vector records."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field

from app.models.vector import VectorStatus
from app.schemas.common import ReadModel, RequestModel


class VectorRead(ReadModel):
    id: str
    hospital_id: str
    base_id: str
    sha256: str
    size: int
    norm: float | None
    num_samples: int
    metadata: dict[str, Any] = Field(validation_alias="meta")
    status: VectorStatus
    reason: str | None
    superseded_by_id: str | None
    superseded_at: datetime | None
    screening: dict[str, Any] | None = Field(
        default=None,
        description="screening statistics (norm, per-layer norms, cosine to the other "
        "hospitals' vectors, validation loss and accuracy) and the policy's reasons",
    )
    screened_at: datetime | None = None
    created_at: datetime
    updated_at: datetime


class ReleaseRequest(RequestModel):
    note: str | None = Field(default=None, max_length=2000, description="why it is released")


class RejectRequest(RequestModel):
    reason: str = Field(min_length=1, max_length=2000, description="shown to the hospital")
