"""The registry's auto-merge decisions, free of any database: when a merge is due and which
vectors it takes, with how many generations each is stale.

The registry's worker (``worker/policy.py``) and selection (``app/services/selection.py``)
read their rows and call these functions; the asynchronous simulation
(``medvec.simulation.asynchronous``) calls the same ones on its own records, so what it
measures is the registry's rule, not a copy of it.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Iterable
from typing import Any, Protocol, TypeVar

__all__ = ["StalePolicy", "VectorLike", "latest_per_hospital", "merge_due"]


class StalePolicy(enum.StrEnum):
    """What the default selection does with a hospital whose newest vector is of an older
    generation: leave it out, or weigh it by ``(1 + staleness) ** -staleness_power``."""

    EXCLUDE = "exclude"
    WEIGHT = "weight"


class VectorLike(Protocol):
    """What selection reads of a vector: the registry's ``DataVector`` rows and the
    simulation's records both have it."""

    @property
    def id(self) -> str: ...

    @property
    def hospital_id(self) -> str: ...

    @property
    def created_at(self) -> Any: ...


V = TypeVar("V", bound=VectorLike)


def merge_due(
    new_vectors: int,
    seconds_since_merge: float | None,
    *,
    k: int,
    every_s: float | None,
    stale_vectors: int = 0,
) -> bool:
    """Whether a base's auto-merge is due: ``k`` vectors of the base arrived since its last
    merge, or (with ``every_s``) anything the merge would take arrived and ``every_s``
    seconds passed since that merge (``seconds_since_merge`` is ``None`` when it was never
    merged). ``stale_vectors``: vectors of older bases that arrived since then and that
    the merge would take; they do not count toward ``k`` (measured to hurt), but the
    schedule merges them, or a slow hospital's last vector would wait for ``k`` fresh
    ones that may never come."""
    if new_vectors >= k:
        return True
    if every_s is None or new_vectors + stale_vectors == 0:
        return False
    return seconds_since_merge is None or seconds_since_merge >= every_s


def latest_per_hospital(
    generations: Iterable[tuple[int, Iterable[V]]],
    *,
    in_base: Collection[str] = (),
    skip_in_base: bool = False,
) -> list[tuple[V, int]]:
    """Each hospital's vector of the least stale generation (its newest there), with that
    staleness, plus its unmerged work of older generations; oldest first.

    ``generations`` holds ``(staleness, vectors)`` from the merged base (staleness 0)
    back through the older bases whose vectors may be applied to it (rebase); each
    ``vectors`` in the order they were created. ``in_base``: ids of vectors already
    inside the base's weights (merged into a version that became a base of its lineage).

    A hospital's vector of a newer generation replaces its older ones, except that the
    newest vector of an older generation that is not ``in_base`` is taken as well: it
    arrived stale and was replaced (the hospital pulled the new version and trained
    again) before any merge took it, so leaving it out would lose that work. Each is
    weighted by its own staleness. With ``skip_in_base`` a hospital whose pick is
    ``in_base`` contributes nothing rather than the same update twice (the registry
    applies it again; the simulation can measure both).
    """
    newest: dict[tuple[str, int], V] = {}
    for staleness, vectors in generations:
        for vector in vectors:
            key = (vector.hospital_id, staleness)
            current = newest.get(key)
            if current is None or vector.created_at > current.created_at:
                newest[key] = vector
    least_stale: dict[str, int] = {}
    for hospital, staleness in newest:
        least_stale[hospital] = min(staleness, least_stale.get(hospital, staleness))
    chosen = [
        (vector, staleness)
        for (hospital, staleness), vector in newest.items()
        if (staleness == least_stale[hospital] and not (skip_in_base and vector.id in in_base))
        or (staleness > least_stale[hospital] and vector.id not in in_base)
    ]
    return sorted(chosen, key=lambda item: (item[0].created_at, item[0].id))
