"""The privacy ledger: each hospital's differential-privacy spending over all its vectors.

Every vector the registry holds from a hospital counts, whatever its status (superseded
vectors were released too). A vector's ``privacy`` metadata names its releases in the
terms of Opacus's RDP accountant (``medvec.privacy.accountant_history``); the ledger
hands the history of all of them to one accountant, which composes them (Renyi-DP adds
up per order) and converts the sum to (epsilon, delta) once. A vector without noise has
no guarantee: the hospital's epsilon is then unbounded (``epsilon`` None).

Records are checked at push (``medvec.vectors.privacy``), but a row stored before that
may hold anything: such a row is read as an *invalid record*, which proves no guarantee
(unbounded, like a vector without noise), and every page still answers.

An admin sets a budget per hospital (epsilon at delta); a vector or share whose release
would take the composed epsilon past it is refused before anything is stored.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter, ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import DataVector, PrivacyBudget
from app.security import Actor
from app.services import audit
from app.services.errors import Forbidden, InvalidInput
from app.services.hospitals import get_hospital
from medvec.privacy import HistoryEntry, accountant_history, compose_epsilon
from medvec.vectors.privacy import PrivacyField, PrivacyRecord

DEFAULT_DELTA = 1e-5
"""The delta the ledger reports at when no budget and no vector names one."""
INVALID_RECORD = "invalid privacy record"
_RECORD: TypeAdapter[PrivacyRecord] = TypeAdapter(PrivacyField)


class PrivacyBudgetExceeded(InvalidInput):
    code = "privacy_budget_exceeded"


@dataclass(frozen=True)
class Ledger:
    """A hospital's composed spending; ``epsilon`` None means unbounded (a vector without
    noise, or with an invalid record), and ``budget_epsilon`` None means no budget is set."""

    hospital_id: str
    vectors: int
    private_vectors: int
    invalid_records: int
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


def stored_record(meta: Mapping[str, Any] | None) -> PrivacyRecord | None:
    """A vector row's privacy record, or None when it is not a valid ``PrivacyRecord`` (a
    row stored before records were checked at push)."""
    try:
        return _RECORD.validate_python(dict(meta or {}).get("privacy", {}))
    except ValidationError:
        return None


@dataclass(frozen=True)
class VectorPrivacy:
    """What one vector's record gives: a line for cards and pages, and whether it carries
    a guarantee the ledger counts."""

    line: str
    guarantee: bool


def describe(meta: Mapping[str, Any] | None) -> VectorPrivacy:
    """The epsilon shown is the ledger's, recomputed from the record's noise, sample rate
    and steps at its delta, not the epsilon the record declares."""
    record = stored_record(meta)
    if record is None:
        return VectorPrivacy(f"{INVALID_RECORD} (no guarantee counted)", False)
    history = accountant_history(record)
    if history is None:
        if record.get("dp_sgd"):
            return VectorPrivacy("DP-SGD without a noisy step (no guarantee)", False)
        clip = record.get("dp_clip")
        return VectorPrivacy(
            "none (no noise)" if clip is None else f"clipped to {clip:g}, no noise", False
        )
    how = "DP-SGD" if record.get("dp_sgd") else "Gaussian output noise"
    if record.get("mechanism") == "distributed_gaussian":
        how = f"distributed Gaussian noise (sums over at least {record.get('secure_k')} hospitals)"
    delta = record.get("delta", DEFAULT_DELTA)
    return VectorPrivacy(
        f"{how}: epsilon {compose_epsilon(history, delta):.3f} at delta {delta:g}", True
    )


def _privacy_of(session: Session, hospital_id: str) -> list[PrivacyRecord | None]:
    query = select(DataVector.meta).where(DataVector.hospital_id == hospital_id)
    return [stored_record(meta) for meta in session.scalars(query)]


def _delta(budget: PrivacyBudget | None, records: Iterable[PrivacyRecord]) -> float:
    if budget is not None:
        return budget.delta
    return max((r["delta"] for r in records if "delta" in r), default=DEFAULT_DELTA)


def compose(
    hospital_id: str, records: list[PrivacyRecord | None], budget: PrivacyBudget | None
) -> Ledger:
    """The ledger of the vectors whose privacy records are ``records`` (None: invalid)."""
    valid = [r for r in records if r is not None]
    histories = [accountant_history(r) for r in valid]
    delta = _delta(budget, valid)
    entries: list[HistoryEntry] = [e for h in histories if h for e in h]
    unbounded = len(valid) < len(records) or any(h is None for h in histories)
    return Ledger(
        hospital_id=hospital_id,
        vectors=len(records),
        private_vectors=sum(h is not None for h in histories),
        invalid_records=len(records) - len(valid),
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


def check_budget(session: Session, hospital_id: str, meta: Mapping[str, Any] | None) -> None:
    """Refuse a vector or share with metadata ``meta`` that would overspend the
    hospital's budget (call it under the hospital's acceptance lock)."""
    budget = get_budget(session, hospital_id)
    if budget is None:
        return
    record = stored_record(meta)
    after = compose(hospital_id, [*_privacy_of(session, hospital_id), record], budget)
    if after.epsilon is not None and after.epsilon <= budget.epsilon:
        return
    before = compose(hospital_id, _privacy_of(session, hospital_id), budget)
    spent = "unbounded" if before.epsilon is None else f"{before.epsilon:.3f}"
    if record is None or accountant_history(record) is None:
        why = "the vector carries no differential-privacy noise, so its epsilon is unbounded"
        hint = "train with DP-SGD (`medvec train --dp-sgd`) or add noise (--dp-noise)"
    elif after.epsilon is None:
        why = (
            "the spending is already unbounded: the registry holds a vector of this hospital "
            "without noise or with an invalid privacy record"
        )
        hint = "ask an admin: with such a vector held, no new vector fits a budget"
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
