"""The registry's auto-merge decisions (``medvec.merging.policy``) on plain records."""

from __future__ import annotations

from dataclasses import dataclass

from medvec.merging.policy import latest_per_hospital, merge_due


@dataclass(frozen=True)
class Vec:
    id: str
    hospital_id: str
    created_at: float


def test_due_after_k_new_vectors_or_on_schedule() -> None:
    assert not merge_due(2, 10.0, k=3, every_s=None)
    assert merge_due(3, 10.0, k=3, every_s=None)
    assert merge_due(3, None, k=3, every_s=None)
    # the schedule merges whatever is new once the period passed, nothing when none is new
    assert merge_due(1, 7200.0, k=3, every_s=3600.0)
    assert not merge_due(1, 1800.0, k=3, every_s=3600.0)
    assert not merge_due(0, 7200.0, k=3, every_s=3600.0)
    assert merge_due(1, None, k=3, every_s=3600.0)
    # stale arrivals do not count toward k, but the schedule merges them
    assert not merge_due(2, 10.0, k=3, every_s=None, stale_vectors=5)
    assert not merge_due(0, 1800.0, k=3, every_s=3600.0, stale_vectors=1)
    assert merge_due(0, 7200.0, k=3, every_s=3600.0, stale_vectors=1)


def test_each_hospital_gives_its_newest_vector_of_the_least_stale_generation() -> None:
    current = [Vec("a1", "a", 5.0), Vec("a2", "a", 7.0)]
    older = [Vec("a0", "a", 1.0), Vec("b0", "b", 2.0), Vec("b1", "b", 3.0)]
    oldest = [Vec("c0", "c", 0.5), Vec("b-", "b", 0.1)]
    # the hospitals' older vectors are inside the base already (merged and promoted)
    picked = latest_per_hospital([(0, current), (1, older), (2, oldest)], in_base={"a0", "b-"})
    assert [(v.id, s) for v, s in picked] == [("c0", 2), ("b1", 1), ("a2", 0)]


def test_vectors_already_in_the_base_are_not_applied_again_when_asked() -> None:
    """With ``skip_in_base`` a hospital whose newest vector was merged into the base
    contributes nothing, not an older vector the newer one replaced."""
    older = [Vec("a0", "a", 1.0), Vec("b0", "b", 2.0)]
    oldest = [Vec("a-", "a", 0.5)]
    picked = latest_per_hospital([(1, older), (2, oldest)], in_base={"a0", "a-"}, skip_in_base=True)
    assert [(v.id, s) for v, s in picked] == [("b0", 1)]
    # the registry's default applies the hospital's newest vector again
    picked = latest_per_hospital([(1, older), (2, oldest)], in_base={"a0", "a-"})
    assert [(v.id, s) for v, s in picked] == [("a0", 1), ("b0", 1)]


def test_unmerged_work_of_an_older_generation_is_taken_beside_the_newer_vector() -> None:
    """A late joiner's first vector arrived stale, and its second (against the new base)
    came before any merge: both are taken, each with its own staleness. Work already
    inside the base, and a vector its own generation superseded, are not."""
    current = [Vec("late2", "late", 9.0), Vec("b2", "b", 8.0)]
    older = [Vec("late0", "late", 3.0), Vec("late1", "late", 6.0), Vec("b1", "b", 5.0)]
    picked = latest_per_hospital([(0, current), (2, older)], in_base={"b1"})
    assert [(v.id, s) for v, s in picked] == [("late1", 2), ("b2", 0), ("late2", 0)]
    # once a version the lineage grew from took it, it is not taken again
    picked = latest_per_hospital([(0, current), (2, older)], in_base={"b1", "late1"})
    assert [(v.id, s) for v, s in picked] == [("b2", 0), ("late2", 0)]
