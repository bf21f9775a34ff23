"""Which data vectors a merge takes, and with which weights.

Resolved when the merge is requested, so a bad selection (a rejected vector, a
vector of another base, nothing to merge) is refused before any work is queued,
and the job records exactly what the worker will merge.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import BaseModelRecord, DataVector, VectorStatus, VersionInput
from app.services.errors import InvalidInput, NotFound
from app.services.generations import lineage
from app.services.hospitals import of_present_hospital, refuse_removed
from medvec.merging.policy import latest_per_hospital

if TYPE_CHECKING:
    from medvec.merging import MergeSpec


MERGEABLE = (VectorStatus.VALIDATED, VectorStatus.SUPERSEDED)


@dataclass(frozen=True)
class Chosen:
    vector: DataVector
    staleness: int
    weight: float


def resolve_selection(
    session: Session,
    base: BaseModelRecord,
    vector_ids: Sequence[str] | None,
    spec: MergeSpec,
    *,
    screened_only: bool = False,
) -> list[Chosen]:
    """The vectors ``vector_ids`` names for ``base`` (default: each hospital's latest), each
    weighted as ``spec`` says (``MergeSpec.weight``: samples or 1, times staleness).

    Raises ``InvalidInput`` when a named vector is rejected, not yet validated, of
    another base or of a removed hospital, and when nothing is left to merge;
    ``NotFound`` for unknown ids. The default skips removed hospitals' vectors, and with
    ``screened_only`` the vectors screening has not looked at yet (the auto-merge's
    selection while some are being screened).
    """
    if vector_ids is not None:
        picked = [(v, 0) for v in _explicit(session, base, vector_ids)]
    else:
        picked = _latest_per_hospital(session, base, spec.rebase, screened_only)
    if not picked:
        raise InvalidInput(
            f"base {base.id} has no validated vectors to merge",
            hint="wait for hospitals to push vectors for this base, or name vector_ids",
            base_id=base.id,
        )
    return [
        Chosen(vector, staleness, spec.weight(vector.num_samples, staleness))
        for vector, staleness in picked
    ]


def _explicit(session: Session, base: BaseModelRecord, ids: Sequence[str]) -> list[DataVector]:
    rows = session.scalars(select(DataVector).where(DataVector.id.in_(ids))).all()
    found = {row.id: row for row in rows}
    missing = [i for i in ids if i not in found]
    if missing:
        raise NotFound(
            f"no vector {missing[0]}", hint="list vectors with GET /api/v1/vectors", ids=missing
        )
    refuse_removed(session, [found[i] for i in ids])
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


def _validated_of(session: Session, base_id: str, screened_only: bool) -> list[DataVector]:
    query = select(DataVector).where(
        DataVector.base_id == base_id,
        DataVector.status == VectorStatus.VALIDATED,
        of_present_hospital(),
    )
    if screened_only:
        query = query.where(DataVector.screened_at.is_not(None))
    return list(session.scalars(query.order_by(DataVector.created_at, DataVector.id)))


def _latest_per_hospital(
    session: Session, base: BaseModelRecord, rebase: bool, screened_only: bool
) -> list[tuple[DataVector, int]]:
    """Each hospital's newest validated vector for ``base``; with ``rebase``, hospitals
    without one contribute their newest vector of the nearest older generation instead,
    and a hospital's newest vector of an older generation that no version of the lineage
    has taken yet is taken too (``medvec.merging.policy.latest_per_hospital``)."""
    generations = lineage(session, base) if rebase else [base]
    return latest_per_hospital(
        # an ancestor's index in the lineage is its staleness (generations.staleness)
        (
            (steps, _validated_of(session, ancestor.id, screened_only))
            for steps, ancestor in enumerate(generations)
        ),
        in_base=vectors_in_base(session, generations),
    )


def vectors_in_base(session: Session, generations: Sequence[BaseModelRecord]) -> set[str]:
    """Ids of the vectors already inside the weights of ``generations[0]``: the inputs
    of the versions its lineage's bases were made from."""
    sources = [g.source_version_id for g in generations if g.source_version_id is not None]
    if not sources:
        return set()
    query = select(VersionInput.vector_id).where(VersionInput.version_id.in_(sources))
    return set(session.scalars(query))
