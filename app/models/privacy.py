"""Per-hospital privacy budgets set by an admin; the spending is composed from the vectors."""

from __future__ import annotations

from sqlalchemy import Float, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base
from app.models.mixins import TimestampMixin


class PrivacyBudget(TimestampMixin, Base):
    """At most ``epsilon`` at ``delta`` over every vector of ``hospital_id``: a vector whose
    release would take the hospital's composed spending past it is refused."""

    __tablename__ = "privacy_budgets"

    hospital_id: Mapped[str] = mapped_column(
        ForeignKey("hospitals.id", ondelete="CASCADE"), primary_key=True
    )
    epsilon: Mapped[float] = mapped_column(Float)
    delta: Mapped[float] = mapped_column(Float)
    set_by: Mapped[str] = mapped_column(String(200))
