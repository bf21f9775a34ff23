"""Which sums a share holder may release without isolating one hospital's vector.

Each released sum is a weighted set ``{member: integer weight}`` over pair ids. Two sums
over sets that differ by exactly one member reveal that member's vector by subtraction,
and more generally any released sums whose weight vectors span a unit vector ``e_j``
reveal member ``j``.

A hospital that pushes again gets a new pair id, so a running sum moves by one hospital
when it subtracts the old share and adds the new one: ``{a, b, c_old}`` and
``{a, b, c_new}`` differ in two pair ids, yet their difference ``c_new - c_old`` is about
hospital c alone. The rule is therefore stated on hospitals (the ``owners`` of the pair
ids): a sum is refused when, with the released sums, some non-zero combination of them
would involve the pair ids of one hospital only, that is when the span of the released
weight vectors meets the coordinate space of one hospital's pair ids in a larger
subspace than before. With one pair id per hospital this is the unit-vector rule above.

:func:`check_query` refuses a set smaller than ``k`` (counted in hospitals) and a set
that would newly expose a hospital. Asking again for a set already released (a retried
merge) adds nothing to the span and is allowed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from medvec.errors import DifferencingSetError, SetTooSmallError

__all__ = ["WeightedSet", "check_query", "exposed_members"]

WeightedSet = Mapping[str, int]


def _matrix(queries: Sequence[WeightedSet], members: list[str]) -> np.ndarray:
    column = {m: j for j, m in enumerate(members)}
    matrix = np.zeros((len(queries), len(members)), dtype=np.float64)
    for i, query in enumerate(queries):
        for member, weight in query.items():
            matrix[i, column[member]] = float(weight)
    return matrix


def _rank(matrix: np.ndarray) -> int:
    return int(np.linalg.matrix_rank(matrix)) if matrix.size else 0


def _exposure(queries: Sequence[WeightedSet], owners: Mapping[str, str]) -> dict[str, int]:
    """Per owner, the dimension of what the sums ``queries`` reveal about that owner's
    pair ids alone: ``dim(span(sums) ∩ span(e_j, j owned))``."""
    members = sorted({m for q in queries for m in q})
    matrix = _matrix(queries, members)
    rank = _rank(matrix)
    columns: dict[str, list[int]] = {}
    for j, member in enumerate(members):
        columns.setdefault(owners.get(member, member), []).append(j)
    exposure = {}
    for owner, owned in columns.items():
        units = np.zeros((len(owned), len(members)))
        units[np.arange(len(owned)), owned] = 1.0
        exposure[owner] = rank + len(owned) - _rank(np.vstack([matrix, units]))
    return exposure


def exposed_members(
    queries: Sequence[WeightedSet], owners: Mapping[str, str] | None = None
) -> list[str]:
    """Owners (pair ids when ``owners`` is not given) about whom alone the sums
    ``queries`` reveal something: a vector, or the change between two of its vectors."""
    return sorted(o for o, dim in _exposure(queries, owners or {}).items() if dim > 0)


def _related(
    history: Sequence[WeightedSet], query: WeightedSet, owners: Mapping[str, str]
) -> list[WeightedSet]:
    """The released sums connected to ``query`` through shared hospitals (the others
    cannot combine with it to isolate anyone the history alone did not)."""

    def hospitals(members: WeightedSet) -> set[str]:
        return {owners.get(m, m) for m in members}

    reached = hospitals(query)
    related: list[WeightedSet] = []
    pending = list(history)
    grew = True
    while grew:
        grew = False
        for past in list(pending):
            if reached & hospitals(past):
                related.append(past)
                reached |= hospitals(past)
                pending.remove(past)
                grew = True
    return related


def check_query(
    history: Sequence[WeightedSet],
    query: WeightedSet,
    k: int,
    owners: Mapping[str, str] | None = None,
) -> None:
    """Raise unless releasing the sum ``query`` is safe after ``history``.

    ``owners`` maps pair ids to hospitals (a pair id not in it is its own hospital).
    ``SetTooSmallError`` for fewer than ``k`` hospitals (or a non-positive weight);
    ``DifferencingSetError`` naming the hospitals the release would expose.
    """
    owners = owners or {}
    size = len({owners.get(m, m) for m in query})
    if size < k:
        raise SetTooSmallError(
            f"a sum over {size} hospitals' shares is refused: the minimum is {k}",
            hint=f"merge at least {k} hospitals' vectors",
            size=size,
            k=k,
        )
    if any(int(w) <= 0 for w in query.values()):
        raise SetTooSmallError(
            "every weight of a secure sum must be a positive integer",
            hint="leave a vector out of the set instead of weighting it 0",
        )
    related = _related(history, query, owners)
    before = _exposure(related, owners)
    after = _exposure([*related, query], owners)
    newly = sorted(o for o, dim in after.items() if dim > before.get(o, 0))
    if newly:
        raise DifferencingSetError(
            f"this sum, with the {len(related)} sums already released over the same "
            f"hospitals, would reveal the vector (or the change of the vector) of "
            f"{len(newly)} hospital(s) by subtraction",
            hint="change the set by at least two hospitals (or merge the same set again)",
            exposed=newly,
        )
