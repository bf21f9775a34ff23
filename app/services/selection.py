"""Which data vectors a merge takes, and with which weights.

Resolved when the merge is requested, so a bad selection (a rejected vector, a
vector of another base, nothing to merge) is refused before any work is queued,
and the job records exactly what the worker will merge.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.errors import InvalidInput, NotFound
from app.models import BaseModelRecord, DataVector, VectorStatus
from app.schemas.merges import Selection, StalePolicy

#: strategies whose weights are the vectors' sample counts; the others weigh vectors equally
SAMPLE_WEIGHTED = frozenset({"weighted_mean"})
MERGEABLE = (VectorStatus.VALIDATED, VectorStatus.SUPERSEDED)


@dataclass(frozen=True)
class Chosen:
    vector: DataVector
    staleness: int
    weight: float


def staleness_factor(staleness: int, power: float) -> float:
    """``(1 + staleness) ** -power``: 1 for the current generation, smaller for older ones."""
    return float((1 + staleness) ** -power)


def resolve_selection(
    session: Session, base: BaseModelRecord, selection: Selection, strategy: str
) -> list[Chosen]:
    """The vectors ``selection`` names for ``base``, weighted for ``strategy``.

    Raises ``InvalidInput`` (422) when a named vector is rejected, not yet validated or
    of another base, and when nothing is left to merge; ``NotFound`` for unknown ids.
    """
    if selection.vector_ids is not None:
        picked = [(v, 0) for v in _explicit(session, base, selection.vector_ids)]
    else:
        picked = _latest_per_hospital(session, base, selection.stale)
    if not picked:
        raise InvalidInput(
            f"base {base.id} has no validated vectors to merge",
            hint="wait for hospitals to push vectors for this base, or name vector_ids",
            base_id=base.id,
        )
    return [
        Chosen(vector, staleness, _weight(vector, staleness, strategy, selection))
        for vector, staleness in picked
    ]


def _weight(vector: DataVector, staleness: int, strategy: str, selection: Selection) -> float:
    """Samples (weighted mean) or 1, times the staleness factor; 1 for the strategies that
    take no weights (median, trimmed mean: they cannot down-weight a stale vector)."""
    from medvec.merging import get_strategy

    if not get_strategy(strategy).uses_weights:
        return 1.0
    weight = float(vector.num_samples) if strategy in SAMPLE_WEIGHTED else 1.0
    return weight * staleness_factor(staleness, selection.staleness_power)


def _explicit(session: Session, base: BaseModelRecord, ids: Sequence[str]) -> list[DataVector]:
    rows = session.scalars(select(DataVector).where(DataVector.id.in_(ids))).all()
    found = {row.id: row for row in rows}
    missing = [i for i in ids if i not in found]
    if missing:
        raise NotFound(
            f"no vector {missing[0]}", hint="list vectors with GET /api/v1/vectors", ids=missing
        )
    for vector_id in ids:
        vector = found[vector_id]
        if vector.status is VectorStatus.REJECTED:
            raise InvalidInput(
                f"vector {vector.id} was rejected ({vector.reason}) and cannot be merged",
                hint="leave it out of vector_ids",
                vector_id=vector.id,
            )
        if vector.status not in MERGEABLE:
            raise InvalidInput(
                f"vector {vector.id} is {vector.status.value}, not validated",
                hint="wait until it is validated, or leave it out of vector_ids",
                vector_id=vector.id,
            )
        if vector.base_id != base.id:
            raise InvalidInput(
                f"vector {vector.id} was made against base {vector.base_id}, not {base.id}",
                hint="merge it with its own base, or leave it out of vector_ids",
                vector_id=vector.id,
                vector_base_id=vector.base_id,
                base_id=base.id,
            )
    return [found[i] for i in ids]


def _validated_of(session: Session, base_id: str) -> list[DataVector]:
    query = (
        select(DataVector)
        .where(DataVector.base_id == base_id, DataVector.status == VectorStatus.VALIDATED)
        .order_by(DataVector.created_at, DataVector.id)
    )
    return list(session.scalars(query))


def _latest_per_hospital(
    session: Session, base: BaseModelRecord, stale: StalePolicy
) -> list[tuple[DataVector, int]]:
    """Each hospital's newest validated vector for ``base``; with ``stale=weight``, hospitals
    without one contribute their newest vector of the nearest older generation instead."""
    picked: dict[str, tuple[DataVector, int]] = {}
    generations = [base] if stale is StalePolicy.EXCLUDE else _lineage(session, base)
    for ancestor in generations:
        staleness = base.generation - ancestor.generation
        for vector in _validated_of(session, ancestor.id):
            current = picked.get(vector.hospital_id)
            if current is None or (
                current[1] == staleness and vector.created_at > current[0].created_at
            ):
                picked[vector.hospital_id] = (vector, staleness)
    return sorted(picked.values(), key=lambda item: (item[0].created_at, item[0].id))


def _lineage(session: Session, base: BaseModelRecord) -> list[BaseModelRecord]:
    """``base`` and its ancestors (newest first) that share its architecture and shapes."""
    chain = [base]
    node = base
    while node.parent_id is not None:
        parent = session.get(BaseModelRecord, node.parent_id)
        if parent is None or parent.spec != base.spec:
            break
        chain.append(parent)
        node = parent
    return chain
