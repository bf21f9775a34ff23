"""Bootstrap intervals and the reliability curve stored with every evaluation."""

from __future__ import annotations

import numpy as np
from scipy.stats import bootstrap

from medvec.metrics import (
    bootstrap_intervals,
    compute_metrics,
    expected_calibration_error,
    reliability_bins,
)


def predictions(n: int, k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k))
    logits[np.arange(n), y] += 1.2
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return y, probs


def test_accuracy_interval_agrees_with_scipy_bootstrap() -> None:
    y, probs = predictions(600, 3)
    correct = (probs.argmax(axis=1) == y).astype(float)
    ours = bootstrap_intervals(y, probs.argmax(axis=1), 3)
    assert ours is not None
    scipy = bootstrap(
        (correct,), np.mean, n_resamples=4000, method="percentile", random_state=1
    ).confidence_interval
    assert abs(ours.accuracy[0] - scipy.low) < 0.01
    assert abs(ours.accuracy[1] - scipy.high) < 0.01
    assert ours.accuracy[0] < correct.mean() < ours.accuracy[1]


def test_intervals_are_seeded_and_narrow_with_more_images() -> None:
    small_y, small_p = predictions(100, 2)
    large_y, large_p = predictions(3000, 2)
    first = bootstrap_intervals(small_y, small_p.argmax(axis=1), 2)
    again = bootstrap_intervals(small_y, small_p.argmax(axis=1), 2)
    large = bootstrap_intervals(large_y, large_p.argmax(axis=1), 2)
    assert first == again
    assert first is not None and large is not None

    def width(interval: tuple[float, float]) -> float:
        return interval[1] - interval[0]

    assert width(large.accuracy) < width(first.accuracy) / 3
    metrics = compute_metrics(small_y, small_p)
    for c in range(2):
        low, high = first.sensitivity[c] or (0, 0)
        assert low <= (metrics.sensitivity[c] or 0) <= high


def test_a_class_absent_from_the_split_has_no_interval() -> None:
    y = np.array([0, 1, 0, 1, 0, 1] * 20)
    pred = y.copy()
    intervals = bootstrap_intervals(y, pred, 3)
    assert intervals is not None
    assert intervals.sensitivity[2] is None
    assert intervals.specificity[2] == (1.0, 1.0)
    assert intervals.accuracy == (1.0, 1.0)
    assert bootstrap_intervals([], [], 2) is None


def test_reliability_bins_add_up_to_the_ece() -> None:
    y, probs = predictions(800, 4, seed=3)
    bins = reliability_bins(y, probs)
    assert sum(b.count for b in bins) == 800
    gap = sum(b.count * abs(b.accuracy - b.confidence) for b in bins) / 800
    assert np.isclose(gap, expected_calibration_error(y, probs))
    assert all(b.lo < b.confidence <= b.hi for b in bins)


def test_intervals_only_when_asked() -> None:
    y, probs = predictions(50, 2)
    assert compute_metrics(y, probs).intervals is None
    assert compute_metrics(y, probs, intervals=True).intervals is not None
    assert compute_metrics(y, probs).calibration
