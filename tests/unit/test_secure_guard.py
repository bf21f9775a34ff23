"""The share holder's guard is exact over the integers (issue 22).

Released sums are exact integer sums of integer (fixed-point) vectors, so an integer
combination of them that is, modulo some q, supported on one hospital's pair ids reveals
that hospital's vectors modulo q although no rational combination isolates them. These
tests check every set of releases the guard accepts against an independent brute-force
search for such combinations.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Mapping, Sequence

import numpy as np
import pytest

from medvec.errors import DifferencingSetError, WeightsNotAllowedError
from medvec.secure import check_query, exposed_members
from medvec.secure.guard import lattice_indices

#: hospitals a and b pushed twice (a superseded pair id and a current one)
OWNERS = {"a1": "a", "a2": "a", "b1": "b", "b2": "b", "c1": "c", "d1": "d"}
K = 2
PRIMES = (2, 3, 5, 7)
"""Moduli of the brute force. Primes are enough: what the releases reveal about a
hospital is a group Z^J / L, and when it is not trivial it has a character of prime order
p, which is a combination of the releases modulo p (every p when it is infinite, i.e. a
rational combination isolates the hospital). 0/1 matrices this small have indices <= 3."""


def _candidates() -> list[dict[str, int]]:
    """Every 0/1 set over at least K hospitals with at most one pair id per hospital."""
    by_hospital: dict[str, list[str]] = {}
    for pair, hospital in OWNERS.items():
        by_hospital.setdefault(hospital, []).append(pair)
    sets: list[frozenset[str]] = []
    for size in range(K, len(by_hospital) + 1):
        for hospitals in itertools.combinations(sorted(by_hospital), size):
            for pairs in itertools.product(*(by_hospital[h] for h in hospitals)):
                sets.append(frozenset(pairs))
    return [dict.fromkeys(sorted(s), 1) for s in sets]


def _brute_force_leaks(
    releases: Sequence[Mapping[str, int]], owners: Mapping[str, str] = OWNERS
) -> set[str]:
    """Hospitals h for which some combination ``sum c_i S_i`` is, modulo a prime p (every
    c in (Z/p)^m tried), zero off h's pair ids and non-zero on them."""
    pairs = sorted(owners)
    matrix = np.array([[r.get(p, 0) for p in pairs] for r in releases], dtype=np.int64)
    hospitals = sorted(set(owners.values()))
    on = np.array([[owners[p] == h for p in pairs] for h in hospitals])  # hospitals x pairs
    coefficients, moduli = _grid(len(releases))
    zero = (coefficients @ matrix) % moduli[:, None] == 0  # combinations x pairs
    off_zero = (zero[:, None, :] | on[None, :, :]).all(axis=2)  # combinations x hospitals
    on_some = (~zero[:, None, :] & on[None, :, :]).any(axis=2)
    hits = (off_zero & on_some).any(axis=0)
    return {h for h, hit in zip(hospitals, hits, strict=True) if hit}


@functools.cache
def _grid(m: int) -> tuple[np.ndarray, np.ndarray]:
    """Every c in (Z/p)^m for every p of PRIMES, and the modulus of each."""
    rows = [(c, p) for p in PRIMES for c in itertools.product(range(p), repeat=m)]
    return np.array([c for c, _ in rows], dtype=np.int64), np.array([p for _, p in rows])


def _accepts(history: Sequence[Mapping[str, int]], query: Mapping[str, int]) -> bool:
    try:
        check_query(history, query, K, OWNERS)
    except DifferencingSetError:
        return False
    return True


def test_the_parity_example_is_refused_although_no_rational_combination_isolates_j() -> None:
    s1, s2, s3 = {"a": 1, "b": 1, "j": 1}, {"b": 1, "c": 1}, {"a": 1, "c": 1}
    assert _brute_force_leaks([s1, s2, s3], {p: p for p in "abcj"}) == {"j"}
    check_query([], s1, 2)
    check_query([s1], s2, 2)
    with pytest.raises(DifferencingSetError) as caught:
        check_query([s1, s2], s3, 2)  # S1 + S2 + S3 = 2(a + b + c) + j: j's lowest bit
    assert caught.value.detail["exposed"] == ["j"]
    assert lattice_indices([s1, s2, s3]) == {"a": 1, "b": 1, "c": 1, "j": 2}


def test_no_set_of_two_to_four_releases_the_guard_accepts_reveals_anything() -> None:
    """Every set of 2 to 4 distinct releases over 4 hospitals (two of them with a second
    pair id) that the guard accepts one after the other: the brute force finds nothing.

    Sets are enough, in one order: the guard's verdict depends on the released set, not
    on its order, and every subset of a set that reveals nothing reveals nothing either
    (fewer sums, a larger kernel), so a set accepted in some order is accepted in any.
    Each refused release, on the other hand, makes the brute force find a leak: the
    guard refuses no more than it must.
    """
    candidates = _candidates()
    accepted_sets = refused = 0
    stack: list[tuple[list[dict[str, int]], int]] = [([], 0)]
    while stack:
        history, start = stack.pop()
        for index in range(start, len(candidates)):
            query = candidates[index]
            released = [*history, query]
            if _accepts(history, query):
                if len(released) >= 2:
                    accepted_sets += 1
                    assert _brute_force_leaks(released) == set(), released
                if len(released) < 4:
                    stack.append((released, index + 1))
            else:
                refused += 1
                assert _brute_force_leaks(released), released
    assert accepted_sets > 100 and refused > 100  # the search is not vacuous


def test_weights_other_than_one_are_refused_whatever_they_are() -> None:
    members = ["a", "b", "c"]
    for weights in itertools.product(range(4), repeat=3):
        query = dict(zip(members, weights, strict=True))
        if set(weights) == {1}:
            check_query([], query, 3)
            continue
        with pytest.raises(WeightsNotAllowedError):
            check_query([], query, 3)
    with pytest.raises(WeightsNotAllowedError):  # the attack of issue 22
        check_query([], {"h1": 1, "h2": 1 << 40, "h3": 1 << 40}, 3)


def test_a_legacy_weighted_release_in_the_history_is_reasoned_about_exactly() -> None:
    """Rows released before issue 22 may hold weights: {h1: 1, h2: 2^40, h3: 2^40} gave
    h1's vector modulo 2^40, and the plain sum over the same three would give it whole."""
    forged = {"h1": 1, "h2": 1 << 40, "h3": 1 << 40}
    assert lattice_indices([forged]) == {"h1": 1 << 40, "h2": 1, "h3": 1}
    assert exposed_members([forged]) == ["h1"]
    with pytest.raises(DifferencingSetError) as caught:
        check_query([forged], {"h1": 1, "h2": 1, "h3": 1}, 3)
    assert caught.value.detail["exposed"] == ["h1"]
    check_query([forged], {"h4": 1, "h5": 1, "h6": 1}, 3)  # other hospitals: unaffected
