"""Which sums a share holder may release without revealing anything about one hospital.

Each release is a row of a matrix M over pair ids: since issue 22 a plain 0/1 sum (every
member weight 1; :class:`WeightsNotAllowedError` for anything else), older rows may hold
other integer weights. Every hospital pre-scales its own vector by its public weight
before splitting it, so the weighted mean needs no weight at the share holder.

**What the releases reveal.** The vectors the sums are over are integers (the fixed-point
encodings ``x``), and a release gives the registry ``M x`` (mod 2^64; a 0/1 sum of
vectors within the norm bound does not wrap, so exactly ``M x`` over Z, and a wrapped
sum would reveal less). Ranks over the reals are not enough: S1 = {a, b, j},
S2 = {b, c}, S3 = {a, c} span no unit vector, yet S1 + S2 + S3 = 2(a + b + c) + j gives
j's lowest bit. The exact criterion: the vectors ``x'`` that give the same sums are
``x + ker_Z(M)``, so the releases say nothing about hospital h's pair ids J alone iff
the projection of the integer kernel onto J is all of Z^J (the lattice index
[Z^J : proj_J ker_Z M] is 1). Otherwise ``x_J`` is revealed modulo that lattice: its
lowest bit at index 2, a whole combination of h's vectors where the index is infinite
(what the rank rule saw: one member's vector, or the change between a hospital's old and
new pair id). Integer combinations ``sum c_i S_i`` that are, modulo some q, supported on
J's coordinates are exactly what this excludes.

:func:`check_query` refuses a set over fewer than ``k`` hospitals, a weight other than 1,
and a set that would shrink any hospital's projected lattice (so, from a clean history,
one that would give any hospital an index above 1). Every release the guard accepts
keeps all indices at 1, so no sequence of accepted releases isolates one hospital. Only
the released sums connected to the query through shared hospitals are considered: M is
block-diagonal over the other components, and a kernel of a block-diagonal matrix is the
product of the blocks' kernels. Asking again for a set already released adds a row the
kernel already satisfies and is allowed.

Arithmetic is exact (Python integers, extended Euclid on sparse vectors, no floats).
Measured once on a shared development core, 300 pair ids of 60 hospitals: after 40
released sums of one pair id per hospital (60 members each), one more checked in 0.1 s;
after 40 sums of 150 random members each, 0.3 s (kernel entries grow to about 10^10).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from medvec.errors import DifferencingSetError, SetTooSmallError, WeightsNotAllowedError

__all__ = ["Release", "check_query", "exposed_members", "lattice_indices", "require_plain"]

Release = Mapping[str, int]
"""A released (or requested) sum: pair id -> its integer weight (1 since issue 22)."""

Vector = dict[int, int]
"""A sparse integer vector over column indices (zero entries left out)."""
Lattice = tuple[tuple[int, ...], ...]
"""A lattice of Z^J as its canonical basis (Hermite normal form rows)."""


def _combine(v: Vector, factor: int, pivot: Vector) -> Vector:
    """``v - factor * pivot``."""
    out = dict(v)
    for i, value in pivot.items():
        entry = out.get(i, 0) - factor * value
        if entry:
            out[i] = entry
        else:
            out.pop(i, None)
    return out


def _restrict(basis: list[Vector], row: Vector) -> list[Vector]:
    """A Z-basis of ``{v in span_Z(basis) : row . v = 0}``.

    Euclid on the values ``row . v`` with unimodular steps ``v -= q * pivot``: at the end
    one vector keeps the gcd (it is not in the kernel and is dropped) and every other
    value is 0. Smallest value first keeps the entries small.
    """
    kernel: list[Vector] = []
    active: list[tuple[int, Vector]] = []
    for v in basis:
        value = sum(row[i] * x for i, x in v.items() if i in row)
        if value:
            active.append((value, v))
        else:
            kernel.append(v)
    while len(active) > 1:
        active.sort(key=lambda item: abs(item[0]))
        pivot_value, pivot = active[0]
        rest = []
        for value, v in active[1:]:
            factor = value // pivot_value
            reduced = _combine(v, factor, pivot)
            remainder = value - factor * pivot_value
            if remainder:
                rest.append((remainder, reduced))
            else:
                kernel.append(reduced)
        active = [active[0], *rest]
    return kernel


def _hermite(generators: list[list[int]], dim: int) -> Lattice:
    """The canonical basis (row Hermite normal form) of the lattice the generators span."""
    rows = [list(g) for g in generators if any(g)]
    basis: list[list[int]] = []
    for col in range(dim):
        active = [r for r in rows if r[col]]
        rows = [r for r in rows if not r[col]]
        while len(active) > 1:
            active.sort(key=lambda r: abs(r[col]))
            pivot = active[0]
            rest = [pivot]
            for r in active[1:]:
                factor = r[col] // pivot[col]
                reduced = [a - factor * b for a, b in zip(r, pivot, strict=True)]
                (rest if reduced[col] else rows).append(reduced)
            active = rest
        if active:
            pivot = active[0] if active[0][col] > 0 else [-a for a in active[0]]
            for r in basis:  # entries above a pivot in [0, pivot)
                factor = r[col] // pivot[col]
                r[:] = [a - factor * b for a, b in zip(r, pivot, strict=True)]
            basis.append(pivot)
    return tuple(tuple(r) for r in basis)


class _Releases:
    """The integer kernel of the releases added so far, over the pair ids of ``over``
    (each owned by a hospital); starts with no release (the kernel is all of Z^n)."""

    def __init__(self, over: Sequence[Release], owners: Mapping[str, str]) -> None:
        members = sorted({m for r in over for m in r})
        self.column = {m: j for j, m in enumerate(members)}
        self.owned: dict[str, list[int]] = {}
        for m, j in self.column.items():
            self.owned.setdefault(owners.get(m, m), []).append(j)
        self.kernel: list[Vector] = [{j: 1} for j in range(len(members))]

    @classmethod
    def of(cls, releases: Sequence[Release], owners: Mapping[str, str]) -> _Releases:
        state = cls(releases, owners)
        for release in releases:
            state.add(release)
        return state

    def add(self, release: Release) -> None:
        row = {self.column[m]: int(w) for m, w in release.items() if int(w)}
        self.kernel = _restrict(self.kernel, row)

    def lattice(self, owner: str) -> Lattice:
        """proj_J ker_Z(M) for the owner's columns J."""
        owned = self.owned[owner]
        generators = [[v.get(j, 0) for j in owned] for v in self.kernel]
        return _hermite(generators, len(owned))

    def exposed(self, owner: str) -> bool:
        lattice = self.lattice(owner)
        return len(lattice) < len(self.owned[owner]) or any(
            row[i] != 1 for i, row in enumerate(lattice)
        )


def lattice_indices(
    releases: Sequence[Release], owners: Mapping[str, str] | None = None
) -> dict[str, int | None]:
    """Per owner, the index [Z^J : proj_J ker_Z M]: 1 when the releases reveal nothing
    about the owner's pair ids alone, ``None`` when infinite (a rational combination of
    the sums isolates them)."""
    state = _Releases.of(releases, owners or {})
    indices: dict[str, int | None] = {}
    for owner, owned in state.owned.items():
        lattice = state.lattice(owner)
        index: int | None = None
        if len(lattice) == len(owned):
            index = 1
            for i, row in enumerate(lattice):
                index *= row[i]
        indices[owner] = index
    return indices


def exposed_members(
    releases: Sequence[Release], owners: Mapping[str, str] | None = None
) -> list[str]:
    """Owners (pair ids when ``owners`` is not given) about whom alone the sums
    ``releases`` reveal something: a vector, a change between two of its vectors, or
    either modulo an integer."""
    state = _Releases.of(releases, owners or {})
    return sorted(owner for owner in state.owned if state.exposed(owner))


def _related(
    history: Sequence[Release], query: Release, owners: Mapping[str, str]
) -> list[Release]:
    """The released sums connected to ``query`` through shared hospitals (the others
    cannot combine with it to reveal anything the history alone did not)."""

    def hospitals(members: Release) -> set[str]:
        return {owners.get(m, m) for m in members}

    reached = hospitals(query)
    related: list[Release] = []
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


def require_plain(query: Release) -> None:
    """Raise ``WeightsNotAllowedError`` unless every member's weight is 1: any other
    integer weights expose each hospital's vector modulo some number (weights (1, 2, 2)
    its lowest bit, (1, 2^40, 2^40) its whole encoding once the registry adds its share)."""
    weighted = sorted(m for m, w in query.items() if int(w) != 1)
    if weighted:
        raise WeightsNotAllowedError(
            f"{len(weighted)} member(s) have a weight other than 1: the share holder only "
            "releases plain sums (each member once)",
            hint="list each pair id once; hospitals pre-scale their vectors by their public "
            "weight when they push (`medvec push --secure`)",
            members=weighted,
        )


def check_query(
    history: Sequence[Release],
    query: Release,
    k: int,
    owners: Mapping[str, str] | None = None,
) -> None:
    """Raise unless releasing the 0/1 sum ``query`` is safe after ``history``.

    ``owners`` maps pair ids to hospitals (a pair id not in it is its own hospital).
    ``WeightsNotAllowedError`` for a weight other than 1; ``SetTooSmallError`` for fewer
    than ``k`` hospitals; ``DifferencingSetError`` naming the hospitals about whom the
    release would reveal something new.
    """
    owners = owners or {}
    require_plain(query)
    size = len({owners.get(m, m) for m in query})
    if size < k:
        raise SetTooSmallError(
            f"a sum over {size} hospitals' shares is refused: the minimum is {k}",
            hint=f"merge at least {k} hospitals' vectors",
            size=size,
            k=k,
        )
    related = _related(history, query, owners)
    state = _Releases([*related, query], owners)
    for release in related:
        state.add(release)
    before = {owner: state.lattice(owner) for owner in state.owned}
    state.add(query)
    newly = sorted(o for o in state.owned if state.lattice(o) != before[o])
    if newly:
        raise DifferencingSetError(
            f"this sum, with the {len(related)} sums already released over the same "
            f"hospitals, would reveal something about the vectors of {len(newly)} "
            "hospital(s) alone (by subtraction, or modulo an integer)",
            hint="change the set by at least two hospitals (or merge the same set again)",
            exposed=newly,
        )
