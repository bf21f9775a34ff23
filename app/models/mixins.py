"""Shared columns: string UUID primary keys, timestamps, enum columns stored as text."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime

from sqlalchemy import Enum, String
from sqlalchemy.orm import Mapped, mapped_column

from app.db import utcnow


def new_id() -> str:
    return str(uuid.uuid4())


class IdMixin:
    """A UUID primary key kept as a 36-character string (portable across backends)."""

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)


class CreatedMixin:
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class TimestampMixin(CreatedMixin):
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


def text_enum(enum_class: type[enum.Enum]) -> Enum:
    """Store an enum by value as VARCHAR; values are checked in Python, not by the database,
    so adding a status later is a code change, not a constraint rewrite."""
    return Enum(
        enum_class,
        native_enum=False,
        create_constraint=False,
        length=20,
        validate_strings=True,
        values_callable=lambda members: [m.value for m in members],
    )
