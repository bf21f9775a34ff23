"""Base model records."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from app.schemas.common import ReadModel


class BaseRead(ReadModel):
    id: str
    name: str
    arch: str
    spec: dict[str, Any]
    provenance: dict[str, Any]
    sha256: str
    size: int
    generation: int
    parent_id: str | None
    source_version_id: str | None
    created_at: datetime
