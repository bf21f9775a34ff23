"""The registry's auto-merge decisions, free of any database: when a merge is due and which
vectors it takes, with how many generations each is stale.

The registry's worker (``worker/policy.py``) and selection (``app/services/selection.py``)
read their rows and call these functions; the asynchronous simulation
(``medvec.simulation.asynchronous``) calls the same ones on its own records, so what it
measures is the registry's rule, not a copy of it.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Any, Protocol, TypeVar

__all__ = ["VectorLike", "latest_per_hospital", "merge_due"]


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
    new_vectors: int, seconds_since_merge: float | None, *, k: int, every_s: float | None
) -> bool:
    """Whether a base's auto-merge is due: ``k`` vectors arrived since its last merge, or
    (with ``every_s``) anything arrived and ``every_s`` seconds passed since that merge
    (``seconds_since_merge`` is ``None`` when it was never merged)."""
    if new_vectors >= k:
        return True
    if every_s is None or new_vectors == 0:
        return False
    return seconds_since_merge is None or seconds_since_merge >= every_s


def latest_per_hospital(
    generations: Iterable[tuple[int, Iterable[V]]],
    *,
    already_merged: Collection[str] = (),
) -> list[tuple[V, int]]:
    """Each hospital's vector of the least stale generation (its newest there), with that
    staleness, oldest first.

    ``generations`` holds ``(staleness, vectors)`` from the merged base (staleness 0)
    back through the older bases whose vectors may be applied to it (rebase); each
    ``vectors`` in the order they were created. A hospital with a vector of a newer
    generation is never given an older one. ``already_merged``: ids of vectors already
    inside the base's weights (merged into a version that became a base of its lineage);
    a hospital whose pick is one of them contributes nothing rather than the same update
    twice (the registry passes none).
    """
    picked: dict[str, tuple[V, int]] = {}
    for staleness, vectors in generations:
        for vector in vectors:
            current = picked.get(vector.hospital_id)
            if current is None or (
                current[1] == staleness and vector.created_at > current[0].created_at
            ):
                picked[vector.hospital_id] = (vector, staleness)
    chosen = [item for item in picked.values() if item[0].id not in already_merged]
    return sorted(chosen, key=lambda item: (item[0].created_at, item[0].id))
