"""IID and Dirichlet hospital splits on real PneumoniaMNIST and BloodMNIST labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medvec.data import split_dirichlet, split_iid
from medvec.errors import DatasetError


@pytest.fixture(scope="module")
def blood_labels(datasets_dir: Path) -> np.ndarray:
    with np.load(datasets_dir / "bloodmnist.npz") as archive:
        return archive["train_labels"]  # (N, 1), 8 classes


def _assert_partition(parts: list[np.ndarray], n: int, k: int) -> None:
    assert len(parts) == k
    assert all(len(p) > 0 for p in parts)
    joined = np.concatenate(parts)
    assert len(joined) == n and np.array_equal(np.sort(joined), np.arange(n))


@pytest.mark.parametrize("k", [1, 5, 20])
def test_iid_covers_all_indices_disjointly_and_evenly(blood_labels: np.ndarray, k: int) -> None:
    parts = split_iid(blood_labels, k, seed=3)
    _assert_partition(parts, len(blood_labels), k)
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize(("k", "alpha"), [(5, 0.1), (10, 0.5), (50, 0.05), (8, 100.0)])
def test_dirichlet_covers_all_indices_and_no_hospital_is_empty(
    blood_labels: np.ndarray, k: int, alpha: float
) -> None:
    _assert_partition(split_dirichlet(blood_labels, k, alpha, seed=0), len(blood_labels), k)


def _mean_dominant_share(labels: np.ndarray, parts: list[np.ndarray]) -> float:
    flat = labels.reshape(-1)
    return float(np.mean([np.bincount(flat[p]).max() / len(p) for p in parts]))


def test_small_alpha_is_skewed_large_alpha_is_not(blood_labels: np.ndarray) -> None:
    overall = np.bincount(blood_labels.reshape(-1)).max() / len(blood_labels)
    skewed = _mean_dominant_share(blood_labels, split_dirichlet(blood_labels, 10, 0.1, seed=1))
    mixed = _mean_dominant_share(blood_labels, split_dirichlet(blood_labels, 10, 100.0, seed=1))
    iid = _mean_dominant_share(blood_labels, split_iid(blood_labels, 10, seed=1))
    assert skewed > 0.5 > overall + 0.2  # one class dominates a typical hospital
    assert abs(mixed - overall) < 0.05 and abs(iid - overall) < 0.05


def test_splits_are_seeded(blood_labels: np.ndarray) -> None:
    same = [split_dirichlet(blood_labels, 6, 0.3, seed=7) for _ in range(2)]
    assert all(np.array_equal(a, b) for a, b in zip(*same, strict=True))
    other = split_dirichlet(blood_labels, 6, 0.3, seed=8)
    assert any(not np.array_equal(a, b) for a, b in zip(same[0], other, strict=True))
    iid = [split_iid(blood_labels, 6, seed=7) for _ in range(2)]
    assert all(np.array_equal(a, b) for a, b in zip(*iid, strict=True))


def test_bad_split_arguments_are_refused() -> None:
    labels = np.array([0, 1, 0])
    with pytest.raises(DatasetError, match="at least one"):
        split_iid(labels, 4, seed=0)
    with pytest.raises(DatasetError, match="alpha must be > 0"):
        split_dirichlet(labels, 2, 0.0, seed=0)
