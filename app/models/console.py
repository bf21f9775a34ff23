"""Console sign-ins: a browser session exchanged for a token, held server-side."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base
from app.models.mixins import CreatedMixin, IdMixin


class ConsoleSession(IdMixin, CreatedMixin, Base):
    """One signed-in browser. The cookie carries a random secret (signed); only its sha256
    is stored, with the token it acts for, the CSRF token of its forms and its expiry.
    Signing out, the token's revocation or the expiry ends it."""

    __tablename__ = "console_sessions"

    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    token_id: Mapped[str] = mapped_column(
        ForeignKey("api_tokens.id", ondelete="CASCADE"), index=True
    )
    csrf_token: Mapped[str] = mapped_column(String(64))
    expires_at: Mapped[datetime] = mapped_column(index=True)
    ended_at: Mapped[datetime | None]
    ip: Mapped[str | None] = mapped_column(String(64))
