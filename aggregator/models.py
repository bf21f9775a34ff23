"""The share holder's tables, under their own metadata (its database is its own)."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, MetaData, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from app.db import NAMING_CONVENTION, UTCDateTime
from app.models.mixins import CreatedMixin, IdMixin, TimestampMixin, text_enum


class AggBase(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime()}


class AggRole(enum.StrEnum):
    ADMIN = "admin"
    HOSPITAL = "hospital"
    REGISTRY = "registry"


class AggToken(IdMixin, CreatedMixin, AggBase):
    """A bearer token, stored hashed: hospitals upload shares, the registry asks for sums."""

    __tablename__ = "agg_tokens"

    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[AggRole] = mapped_column(text_enum(AggRole))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    revoked_at: Mapped[datetime | None]


class UploadStatus(enum.StrEnum):
    OPEN = "open"
    COMPLETED = "completed"
    EXPIRED = "expired"


class AggUpload(IdMixin, TimestampMixin, AggBase):
    """A resumable upload of one share file (the bytes live in the store's part file)."""

    __tablename__ = "agg_uploads"

    owner: Mapped[str] = mapped_column(String(200), index=True)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    size: Mapped[int] = mapped_column(BigInteger)
    offset: Mapped[int] = mapped_column(BigInteger, default=0)
    status: Mapped[UploadStatus] = mapped_column(text_enum(UploadStatus), index=True)
    expires_at: Mapped[datetime]
    share_id: Mapped[str | None] = mapped_column(String(36))


class AggShare(IdMixin, CreatedMixin, AggBase):
    """Share B of one vector, known by the pair id its share A at the registry also carries."""

    __tablename__ = "agg_shares"

    pair_id: Mapped[str] = mapped_column(String(32), unique=True)
    hospital: Mapped[str] = mapped_column(String(200), index=True)
    base_sha256: Mapped[str] = mapped_column(String(64))
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    size: Mapped[int] = mapped_column(BigInteger)


class SummedSet(IdMixin, CreatedMixin, AggBase):
    """A released sum: which pair ids (weight 1 each; rows released before issue 22 may
    hold other weights, and the guard reasons about them as they are), for which request."""

    __tablename__ = "agg_summed_sets"

    request_id: Mapped[str] = mapped_column(String(200), unique=True)
    members: Mapped[dict[str, int]] = mapped_column(JSON)
    requested_by: Mapped[str] = mapped_column(String(200))
    sha256: Mapped[str] = mapped_column(String(64))


class AggAuditEvent(IdMixin, CreatedMixin, AggBase):
    __tablename__ = "agg_audit_events"

    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(100), index=True)
    target: Mapped[str | None] = mapped_column(String(200))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    note: Mapped[str | None] = mapped_column(Text)
