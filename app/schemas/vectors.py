"""Data vector records."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field

from app.models.vector import VectorStatus
from app.schemas.common import ReadModel


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
    created_at: datetime
    updated_at: datetime
