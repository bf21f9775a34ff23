"""The privacy ledger of a hospital and the budget an admin sets for it."""

from __future__ import annotations

from pydantic import BaseModel, Field, StrictFloat

from app.schemas.common import RequestModel


class PrivacyBudgetSet(RequestModel):
    epsilon: StrictFloat = Field(
        gt=0, le=1e6, description="the most epsilon the hospital may spend"
    )
    delta: StrictFloat = Field(gt=0, lt=1, description="the delta the budget is counted at")


class PrivacyLedgerRead(BaseModel):
    """A hospital's spending over every vector it pushed, composed by Opacus' RDP
    accountant; ``epsilon`` is null when a vector without noise (or with an invalid
    privacy record) makes it unbounded."""

    hospital_id: str
    vectors: int
    private_vectors: int = Field(description="vectors with a differential-privacy guarantee")
    invalid_records: int = Field(
        description="vectors stored with a malformed privacy record (before records were "
        "checked at push); each counts as no guarantee, so epsilon is then null"
    )
    steps: int = Field(description="noisy releases counted (DP-SGD steps, noisy vectors)")
    epsilon: float | None
    delta: float
    budget_epsilon: float | None
    budget_delta: float | None
    remaining_epsilon: float | None
