"""``VectorMetadata``: what a data vector says about itself (``medvec.vector`` header key)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from medvec.models.spec import ModelSpec
from medvec.vectors.privacy import PrivacyField, PrivacyRecord

__all__ = ["VectorMetadata", "utc_now_iso"]


def utc_now_iso() -> str:
    """The current time as ISO 8601 in UTC (seconds precision)."""
    return datetime.now(UTC).replace(microsecond=0).isoformat()


class VectorMetadata(BaseModel):
    """Typed metadata of a data vector, stored as JSON in the safetensors header.

    ``base_id`` is the registry id of the base; offline it is the base file's sha256.
    ``privacy`` is ``{}`` or a checked ``PrivacyRecord`` (``medvec.vectors.privacy``).
    """

    model_config = ConfigDict(extra="forbid")

    format_version: int = 1
    base_id: str = Field(min_length=1)
    base_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    hospital: str = Field(min_length=1)
    num_samples: int = Field(gt=0)
    label_histogram: dict[str, int] = Field(default_factory=dict)
    training: dict[str, Any] = Field(default_factory=dict)
    privacy: PrivacyField = Field(default_factory=lambda: PrivacyRecord())
    spec: ModelSpec | None = None
    created_at: str = Field(default_factory=utc_now_iso)
    extra: dict[str, str] = Field(default_factory=dict)

    @field_validator("base_id", "hospital", "created_at")
    @classmethod
    def _no_nul(cls, value: str) -> str:
        """Registries keep these as database text, which cannot hold NUL."""
        if "\x00" in value:
            raise ValueError("must not contain NUL (\\u0000) characters")
        return value
