"""Held-out benchmark datasets, registered by admins and never shown to hospitals."""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, BigInteger, String
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base
from app.models.mixins import CreatedMixin, IdMixin


class Benchmark(IdMixin, CreatedMixin, Base):
    __tablename__ = "benchmarks"

    name: Mapped[str] = mapped_column(String(200), unique=True)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    size: Mapped[int] = mapped_column(BigInteger)
    num_classes: Mapped[int]
    sizes: Mapped[dict[str, int]] = mapped_column(JSON)
    image_shape: Mapped[list[int]] = mapped_column(JSON, default=list)
    info: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
