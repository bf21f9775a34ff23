"""Running sums' lineage: which vectors each base's sums should hold, and which they do.

For each base and weighting rule (``samples`` for the weighted mean, ``uniform`` for
task arithmetic), the sums hold ``w_i tau_i`` of every hospital's current validated
vector of that base, with ``w_i`` as ``MergeSpec.weight`` gives it (removed hospitals
hold none). When a vector is accepted (or superseded, or its hospital's vectors
rejected) and when a hospital is removed, the worker asks
``plan_change`` what to subtract and add, computes the new file, and ``record_change``
stores the new members, refusing when someone else changed the sums meanwhile. A linear
merge whose inputs are exactly a sums' members is built from them (``matching``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from app.db import utcnow
from app.models import BaseModelRecord, DataVector, RunningSum, RunningSumMember
from app.services.errors import InvalidInput
from app.services.selection import resolve_selection

if TYPE_CHECKING:
    from medvec.merging import MergeSpec


__all__ = [
    "WEIGHTINGS",
    "Member",
    "SumsChange",
    "has_sums",
    "matching",
    "plan_change",
    "record_change",
    "record_check",
    "sums_file_name",
    "wanted_members",
]

#: the linear strategy each weighting rule's sums serve
WEIGHTINGS = {"samples": "weighted_mean", "uniform": "task_arithmetic"}


@dataclass(frozen=True)
class Member:
    vector_id: str
    sha256: str
    weight: float


@dataclass(frozen=True)
class SumsChange:
    """What a worker computes: from the sums at ``revision`` (``None``: from scratch), take
    away ``remove`` and add ``add``, to hold ``after``."""

    base_id: str
    base_sha256: str
    weighting: str
    revision: int | None
    held: tuple[Member, ...]
    remove: tuple[Member, ...]
    add: tuple[Member, ...]
    after: tuple[Member, ...]

    @property
    def rebuild(self) -> bool:
        return self.revision is None


def sums_file_name(base_id: str, weighting: str) -> str:
    return f"sums-{base_id}-{weighting}.safetensors"


def _spec(weighting: str) -> MergeSpec:
    from medvec.merging import MergeSpec

    if weighting not in WEIGHTINGS:
        raise InvalidInput(
            f"no running sums for weighting {weighting!r}", weightings=list(WEIGHTINGS)
        )
    return MergeSpec(strategy=WEIGHTINGS[weighting])


def wanted_members(session: Session, base: BaseModelRecord, weighting: str) -> list[Member]:
    """Each hospital's current validated vector of ``base`` with its weight (none stale)."""
    try:
        chosen = resolve_selection(session, base, None, _spec(weighting))
    except InvalidInput:
        return []
    return [Member(c.vector.id, c.vector.sha256, c.weight) for c in chosen]


def _row(
    session: Session, base_id: str, weighting: str, *, lock: bool = False
) -> RunningSum | None:
    query = (
        select(RunningSum)
        .where(RunningSum.base_id == base_id, RunningSum.weighting == weighting)
        .options(selectinload(RunningSum.members))
    )
    if lock:
        query = query.with_for_update()
    return session.scalars(query).first()


def _held(session: Session, row: RunningSum) -> list[Member]:
    ids = [m.vector_id for m in row.members]
    query = select(DataVector.id, DataVector.sha256).where(DataVector.id.in_(ids))
    shas: dict[str, str] = dict(session.execute(query).all())
    members = sorted(row.members, key=lambda m: m.vector_id)
    return [Member(m.vector_id, shas[m.vector_id], m.weight) for m in members]


def plan_change(session: Session, base: BaseModelRecord, weighting: str) -> SumsChange | None:
    """What the sums of ``base`` under ``weighting`` must become; ``None`` when they hold
    what they should (or should hold nothing and do not exist)."""
    wanted = wanted_members(session, base, weighting)
    row = _row(session, base.id, weighting)
    held = _held(session, row) if row is not None else []
    if {(m.vector_id, m.weight) for m in held} == {(m.vector_id, m.weight) for m in wanted}:
        return None
    keep = {(m.vector_id, m.weight) for m in wanted}
    had = {(m.vector_id, m.weight) for m in held}
    remove = tuple(m for m in held if (m.vector_id, m.weight) not in keep)
    add = tuple(m for m in wanted if (m.vector_id, m.weight) not in had)
    return SumsChange(
        base_id=base.id,
        base_sha256=base.sha256,
        weighting=weighting,
        revision=row.revision if row is not None else None,
        held=tuple(held),
        remove=remove,
        add=add,
        after=tuple(wanted),
    )


def record_change(session: Session, change: SumsChange) -> bool:
    """Store the members ``change`` computed; ``False`` (nothing stored) when the sums moved
    on since it was planned (another worker's change came first: plan again)."""
    row = _row(session, change.base_id, change.weighting, lock=True)
    if (row.revision if row is not None else None) != change.revision:
        return False
    if row is None:
        row = RunningSum(
            base_id=change.base_id, weighting=change.weighting, revision=0, total_weight=0.0
        )
        session.add(row)
    row.members = [RunningSumMember(vector_id=m.vector_id, weight=m.weight) for m in change.after]
    row.total_weight = float(sum(m.weight for m in change.after))
    row.revision += 1
    return True


def has_sums(session: Session, base_id: str, weighting: str) -> bool:
    return _row(session, base_id, weighting) is not None


def record_check(session: Session, base_id: str, weighting: str, drift: float) -> None:
    """Keep the result of comparing the running file with a full recompute."""
    row = _row(session, base_id, weighting, lock=True)
    if row is not None:
        row.checked_at = utcnow()
        row.drift = drift


def matching(
    session: Session, base_id: str, weighting: str, inputs: dict[str, float]
) -> RunningSum | None:
    """The sums of ``base_id`` under ``weighting`` when they hold exactly ``inputs``
    (vector id -> weight), else ``None``."""
    row = _row(session, base_id, weighting)
    if row is None:
        return None
    held = {m.vector_id: m.weight for m in row.members}
    return row if held == inputs else None
