"""The privacy ledger: each hospital's differential-privacy spending over all its vectors.

Every vector the registry holds from a hospital counts, whatever its status (superseded
vectors were released too). A vector's ``privacy`` metadata names its releases in the
terms of Opacus's RDP accountant (``medvec.privacy.accountant_history``); the ledger
hands the history of all of them to one accountant, which composes them (Renyi-DP adds
up per order) and converts the sum to (epsilon, delta) once. A vector without noise has
no guarantee: the hospital's epsilon is then unbounded (``epsilon`` None).

An admin sets a budget per hospital (epsilon at delta); a vector whose release would take
the composed epsilon past it is refused before anything is stored.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import DataVector, PrivacyBudget
from app.security import Actor
from app.services import audit
from app.services.errors import Forbidden, InvalidInput
from app.services.hospitals import get_hospital
from medvec.privacy import HistoryEntry, accountant_history, compose_epsilon

DEFAULT_DELTA = 1e-5
"""The delta the ledger reports at when no budget and no vector names one."""


class PrivacyBudgetExceeded(InvalidInput):
    code = "privacy_budget_exceeded"


@dataclass(frozen=True)
class Ledger:
    """A hospital's composed spending; ``epsilon`` None means unbounded (a vector without
    noise), and ``budget_epsilon`` None means no budget is set."""

    hospital_id: str
    vectors: int
    private_vectors: int
    steps: int
    epsilon: float | None
    delta: float
    budget_epsilon: float | None
    budget_delta: float | None

    @property
    def remaining(self) -> float | None:
        if self.budget_epsilon is None or self.epsilon is None:
            return None
        return max(self.budget_epsilon - self.epsilon, 0.0)


def get_budget(session: Session, hospital_id: str) -> PrivacyBudget | None:
    return session.get(PrivacyBudget, hospital_id)


def _privacy_of(session: Session, hospital_id: str) -> list[Mapping[str, Any]]:
    query = select(DataVector.meta).where(DataVector.hospital_id == hospital_id)
    return [dict(meta or {}).get("privacy") or {} for meta in session.scalars(query)]


def _delta(budget: PrivacyBudget | None, privacies: Iterable[Mapping[str, Any]]) -> float:
    if budget is not None:
        return budget.delta
    deltas = [float(p["delta"]) for p in privacies if p.get("delta")]
    return max(deltas, default=DEFAULT_DELTA)


def compose(
    hospital_id: str, privacies: list[Mapping[str, Any]], budget: PrivacyBudget | None
) -> Ledger:
    """The ledger of the vectors whose ``privacy`` metadata is ``privacies``."""
    histories = [accountant_history(p) for p in privacies]
    delta = _delta(budget, privacies)
    entries: list[HistoryEntry] = [e for h in histories if h for e in h]
    unbounded = any(h is None for h in histories)
    return Ledger(
        hospital_id=hospital_id,
        vectors=len(privacies),
        private_vectors=sum(h is not None for h in histories),
        steps=sum(e[2] for e in entries),
        epsilon=None if unbounded else compose_epsilon(entries, delta),
        delta=delta,
        budget_epsilon=budget.epsilon if budget else None,
        budget_delta=budget.delta if budget else None,
    )


def check_reader(actor: Actor, hospital_id: str) -> None:
    """An admin reads every ledger, a hospital its own only."""
    if not actor.is_admin and actor.hospital_id != hospital_id:
        raise Forbidden(
            "a hospital reads only its own privacy ledger",
            hint="ask for /api/v1/hospitals/{your id}/privacy (`medvec whoami` names it)",
        )


def ledger(session: Session, hospital_id: str) -> Ledger:
    get_hospital(session, hospital_id)
    return compose(hospital_id, _privacy_of(session, hospital_id), get_budget(session, hospital_id))


def check_budget(session: Session, hospital_id: str, privacy: Mapping[str, Any]) -> None:
    """Refuse a vector with ``privacy`` metadata that would overspend the hospital's budget."""
    budget = get_budget(session, hospital_id)
    if budget is None:
        return
    after = compose(hospital_id, [*_privacy_of(session, hospital_id), privacy], budget)
    if after.epsilon is not None and after.epsilon <= budget.epsilon:
        return
    before = compose(hospital_id, _privacy_of(session, hospital_id), budget)
    spent = "unbounded" if before.epsilon is None else f"{before.epsilon:.3f}"
    if accountant_history(privacy) is None:
        why = "the vector carries no differential-privacy noise, so its epsilon is unbounded"
        hint = "train with DP-SGD (`medvec train --dp-sgd`) or add noise (--dp-noise)"
    else:
        why = f"it would take the spending to epsilon {after.epsilon:.3f}"
        hint = "train with more noise or fewer steps, or ask an admin to raise the budget"
    raise PrivacyBudgetExceeded(
        f"the vector would exceed the hospital's privacy budget of epsilon "
        f"{budget.epsilon:g} at delta {budget.delta:g}: {why} (spent so far: {spent})",
        hint=hint,
        budget_epsilon=budget.epsilon,
        budget_delta=budget.delta,
        spent_epsilon=before.epsilon,
        epsilon_after=after.epsilon,
    )


def set_budget(
    session: Session, actor: Actor, hospital_id: str, *, epsilon: float, delta: float
) -> Ledger:
    """Set (or replace) the hospital's budget; vectors already held stay, even over it."""
    get_hospital(session, hospital_id)
    budget = get_budget(session, hospital_id)
    if budget is None:
        budget = PrivacyBudget(hospital_id=hospital_id, epsilon=epsilon, delta=delta)
        session.add(budget)
    budget.epsilon, budget.delta, budget.set_by = epsilon, delta, actor.name
    session.flush()
    audit.record(
        session,
        actor,
        "privacy_budget.set",
        target_type="hospital",
        target_id=hospital_id,
        epsilon=epsilon,
        delta=delta,
    )
    return ledger(session, hospital_id)


def clear_budget(session: Session, actor: Actor, hospital_id: str) -> Ledger:
    get_hospital(session, hospital_id)
    budget = get_budget(session, hospital_id)
    if budget is not None:
        session.delete(budget)
        session.flush()
        audit.record(
            session, actor, "privacy_budget.cleared", target_type="hospital", target_id=hospital_id
        )
    return ledger(session, hospital_id)
