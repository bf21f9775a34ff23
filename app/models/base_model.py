"""Base model records: the pretrained (or promoted) weights every data vector refers to.

Named ``BaseModelRecord`` to stay clear of pydantic's ``BaseModel``.
"""

from __future__ import annotations

import enum
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base
from app.models.mixins import CreatedMixin, IdMixin, text_enum


class BaseStatus(enum.StrEnum):
    """Where a base stands with the architecture check a worker runs on it.

    The registry checks an uploaded base's header (format, spec, tensor layout) without
    torch; whether its tensors build the architecture its spec names is checked by a
    worker (``medvec.bases.verify``). Only a ``ready`` base takes vectors and merges.
    """

    VERIFYING = "verifying"
    READY = "ready"
    REJECTED = "rejected"


class BaseModelRecord(IdMixin, CreatedMixin, Base):
    __tablename__ = "base_models"

    name: Mapped[str] = mapped_column(String(200))
    arch: Mapped[str] = mapped_column(String(100))
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    provenance: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    size: Mapped[int] = mapped_column(BigInteger)
    generation: Mapped[int] = mapped_column(default=0, index=True)
    status: Mapped[BaseStatus] = mapped_column(
        text_enum(BaseStatus), default=BaseStatus.READY, server_default=BaseStatus.READY.value
    )
    reason: Mapped[str | None] = mapped_column(Text)
    parent_id: Mapped[str | None] = mapped_column(ForeignKey("base_models.id", ondelete="RESTRICT"))
    source_version_id: Mapped[str | None] = mapped_column(
        ForeignKey("model_versions.id", ondelete="RESTRICT", use_alter=True), unique=True
    )
