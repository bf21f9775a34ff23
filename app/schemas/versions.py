"""Model versions, lineage and promotion."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel

from app.models.version import VersionStatus
from app.schemas.common import ReadModel


class VersionInputRead(ReadModel):
    vector_id: str
    weight: float


class VersionRead(ReadModel):
    id: str
    base_id: str
    name: str | None
    strategy: str
    params: dict[str, Any]
    sha256: str
    size: int
    status: VersionStatus
    production_at: datetime | None
    rolled_back_at: datetime | None
    created_at: datetime
    updated_at: datetime
    inputs: list[VersionInputRead] = []


class PromoteRequest(BaseModel):
    stage: Literal["staging", "production"]
    force: bool = False
