"""Base model records."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from app.models.base_model import BaseStatus
from app.schemas.common import ReadModel


class BaseRead(ReadModel):
    """``status``: ``verifying`` until a worker has checked the weights against the
    architecture, then ``ready`` (takes vectors and merges) or ``rejected`` (``reason``)."""

    id: str
    name: str
    arch: str
    spec: dict[str, Any]
    provenance: dict[str, Any]
    sha256: str
    size: int
    generation: int
    status: BaseStatus
    reason: str | None
    parent_id: str | None
    source_version_id: str | None
    created_at: datetime
