"""The privacy ledger per hospital (admin, or the hospital itself) and its budget (admin)."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.deps import AdminPrincipal, Principal, SessionDep
from app.api.routes.common import errors
from app.errors import Forbidden, NotFound
from app.schemas.privacy import PrivacyBudgetSet, PrivacyLedgerRead
from app.services import privacy
from app.services.privacy import Ledger

router = APIRouter(prefix="/hospitals/{hospital_id}", tags=["privacy"])


def ledger_read(ledger: Ledger) -> PrivacyLedgerRead:
    return PrivacyLedgerRead(
        hospital_id=ledger.hospital_id,
        vectors=ledger.vectors,
        private_vectors=ledger.private_vectors,
        invalid_records=ledger.invalid_records,
        steps=ledger.steps,
        epsilon=ledger.epsilon,
        delta=ledger.delta,
        budget_epsilon=ledger.budget_epsilon,
        budget_delta=ledger.budget_delta,
        remaining_epsilon=ledger.remaining,
    )


@router.get("/privacy", response_model=PrivacyLedgerRead, responses=errors(NotFound, Forbidden))
def get_ledger(hospital_id: str, session: SessionDep, actor: Principal) -> PrivacyLedgerRead:
    """The hospital's composed (epsilon, delta) spending and its budget."""
    privacy.check_reader(actor, hospital_id)
    return ledger_read(privacy.ledger(session, hospital_id))


@router.put("/privacy-budget", response_model=PrivacyLedgerRead, responses=errors(NotFound))
def set_budget(
    hospital_id: str, body: PrivacyBudgetSet, session: SessionDep, actor: AdminPrincipal
) -> PrivacyLedgerRead:
    """Set the hospital's budget: vectors that would take it past epsilon are refused."""
    ledger = privacy.set_budget(session, actor, hospital_id, epsilon=body.epsilon, delta=body.delta)
    return ledger_read(ledger)


@router.delete("/privacy-budget", response_model=PrivacyLedgerRead, responses=errors(NotFound))
def clear_budget(hospital_id: str, session: SessionDep, actor: AdminPrincipal) -> PrivacyLedgerRead:
    """Remove the hospital's budget (its spending is still shown)."""
    return ledger_read(privacy.clear_budget(session, actor, hospital_id))
