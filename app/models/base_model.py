"""Base model records: the pretrained (or promoted) weights every data vector refers to.

Named ``BaseModelRecord`` to stay clear of pydantic's ``BaseModel``.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base
from app.models.mixins import CreatedMixin, IdMixin


class BaseModelRecord(IdMixin, CreatedMixin, Base):
    __tablename__ = "base_models"

    name: Mapped[str] = mapped_column(String(200))
    arch: Mapped[str] = mapped_column(String(100))
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    provenance: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    size: Mapped[int] = mapped_column(BigInteger)
    generation: Mapped[int] = mapped_column(default=0, index=True)
    parent_id: Mapped[str | None] = mapped_column(ForeignKey("base_models.id", ondelete="RESTRICT"))
    source_version_id: Mapped[str | None] = mapped_column(
        ForeignKey("model_versions.id", ondelete="RESTRICT", use_alter=True), unique=True
    )
