"""Benchmark records."""

from __future__ import annotations

from datetime import datetime

from app.schemas.common import ReadModel


class BenchmarkRead(ReadModel):
    id: str
    name: str
    sha256: str
    size: int
    num_classes: int
    sizes: dict[str, int]
    image_shape: list[int]
    created_at: datetime
