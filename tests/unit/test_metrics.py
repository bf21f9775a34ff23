"""Metrics against hand-computed cases and an independent pairwise AUC."""

from __future__ import annotations

import json
from itertools import product

import numpy as np
import pytest

from medvec.metrics import (
    binary_auc,
    compute_metrics,
    confusion_matrix,
    expected_calibration_error,
    rankdata,
)


def _pairwise_auc(positive: np.ndarray, scores: np.ndarray) -> float:
    """AUC as the probability a positive outscores a negative (ties count 1/2)."""
    pos, neg = scores[positive], scores[~positive]
    wins = sum(1.0 if p > q else 0.5 if p == q else 0.0 for p, q in product(pos, neg))
    return wins / (len(pos) * len(neg))


def test_three_class_case_by_hand() -> None:
    y = np.array([0, 0, 0, 1, 1, 2])
    probs = np.array(
        [
            [0.7, 0.2, 0.1],  # 0 -> 0
            [0.5, 0.4, 0.1],  # 0 -> 0
            [0.2, 0.7, 0.1],  # 0 -> 1
            [0.1, 0.8, 0.1],  # 1 -> 1
            [0.3, 0.3, 0.4],  # 1 -> 2
            [0.1, 0.1, 0.8],  # 2 -> 2
        ]
    )
    m = compute_metrics(y, probs)
    assert m.confusion_matrix == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert m.n == 6 and m.num_classes == 3
    assert m.accuracy == pytest.approx(4 / 6)
    assert m.sensitivity == pytest.approx([2 / 3, 1 / 2, 1.0])
    # specificity: TN / (TN + FP); class 0: 3/3, class 1: 3/4, class 2: 4/5
    assert m.specificity == pytest.approx([1.0, 3 / 4, 4 / 5])
    assert m.balanced_accuracy == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    # F1 = 2TP / (2TP + FP + FN): 4/5, 2/4, 2/3
    assert m.f1_macro == pytest.approx((4 / 5 + 1 / 2 + 2 / 3) / 3)
    expected_auc = [_pairwise_auc(y == c, probs[:, c]) for c in range(3)]
    assert m.auc == pytest.approx(expected_auc)
    assert m.auc_macro == pytest.approx(np.mean(expected_auc))
    # class 0 by hand: positives score .7,.5,.2 against negatives .1,.3,.1 -> 8 of 9 pairs
    assert m.auc[0] == pytest.approx(8 / 9)


def test_binary_auc_with_ties_matches_pairwise_on_random_scores() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, size=300)
    p1 = np.round(rng.random(300) * 0.6 + 0.4 * y, 1)  # coarse: many ties
    m = compute_metrics(y, np.stack([1 - p1, p1], axis=1))
    assert m.auc_macro == pytest.approx(_pairwise_auc(y == 1, p1))
    assert compute_metrics(y, p1).auc_macro == pytest.approx(m.auc_macro)


def test_multiclass_auc_matches_pairwise_on_random_probs() -> None:
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(200, 5))
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    y = rng.integers(0, 5, size=200)
    m = compute_metrics(y, probs)
    expected = [_pairwise_auc(y == c, probs[:, c]) for c in range(5)]
    assert m.auc == pytest.approx(expected)


def test_perfect_and_inverted_rankings() -> None:
    assert binary_auc([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert binary_auc([0, 0, 1, 1], [0.9, 0.8, 0.2, 0.1]) == 0.0
    assert binary_auc([0, 0, 1, 1], [0.5, 0.5, 0.5, 0.5]) == 0.5
    assert binary_auc([1, 1, 1], [0.1, 0.2, 0.3]) is None


def test_rankdata_averages_ties() -> None:
    assert rankdata([3.0, 1.0, 3.0, 2.0]).tolist() == [3.5, 1.0, 3.5, 2.0]


def test_absent_class_gives_none_not_nan_and_json_serialises() -> None:
    y = np.array([0, 0, 1, 1])
    probs = np.array([[0.8, 0.1, 0.1], [0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.1, 0.2, 0.7]])
    m = compute_metrics(y, probs)
    assert m.sensitivity[2] is None and m.auc[2] is None
    assert m.specificity[2] == pytest.approx(3 / 4)
    assert m.balanced_accuracy == pytest.approx((1.0 + 0.5) / 2)
    # F1 over classes seen in y_true or predictions: 1.0, 2/3, 0.0
    assert m.f1_macro == pytest.approx((1.0 + 2 / 3 + 0.0) / 3)
    assert m.auc_macro == pytest.approx((1.0 + 3 / 4) / 2)  # class 1: .2 loses to .3
    assert json.loads(m.model_dump_json())["sensitivity"][2] is None


def test_ece_known_cases() -> None:
    y = np.array([1, 1, 1, 1, 1])
    # always certain and right: perfectly calibrated
    assert expected_calibration_error(y, np.tile([0.0, 1.0], (5, 1))) == 0.0
    # confidence 0.8 in every case, 4 of 5 right: calibrated as well
    probs = np.tile([0.2, 0.8], (5, 1))
    probs[0] = [0.8, 0.2]
    assert expected_calibration_error(y, probs) == pytest.approx(0.0, abs=1e-12)
    # confidence 0.9, always wrong: gap 0.9
    assert expected_calibration_error(y, np.tile([0.9, 0.1], (5, 1))) == pytest.approx(0.9)
    # two bins: {0.95 x2, right and wrong} -> |0.5-0.95|, {0.6 x2, both right} -> |1-0.6|
    y2 = np.array([0, 1, 0, 0])
    p2 = np.array([[0.95, 0.05], [0.95, 0.05], [0.6, 0.4], [0.6, 0.4]])
    assert expected_calibration_error(y2, p2) == pytest.approx((2 * 0.45 + 2 * 0.4) / 4)


def test_confusion_matrix_and_bad_input() -> None:
    assert confusion_matrix([0, 1, 1], [1, 1, 0], 2).tolist() == [[0, 1], [1, 1]]
    with pytest.raises(ValueError, match="labels must lie in"):
        compute_metrics([0, 3], np.full((2, 2), 0.5))
    with pytest.raises(ValueError, match="probs must be"):
        compute_metrics([0, 1], np.full((3, 2), 0.5))


def test_non_finite_probabilities_are_measured_not_refused() -> None:
    """A merged model before BatchNorm recalibration can output NaN; scikit-learn's AUC
    refuses such scores, and a merge's measurement of it must not fail the merge."""
    y = np.array([0, 1, 0, 1, 1])
    p1 = np.array([0.1, np.nan, 0.4, 0.8, np.nan])
    m = compute_metrics(y, np.stack([1 - p1, p1], axis=1))
    # NaN ranks above every number, each its own rank: ranks 1, 4, 2, 3, 5
    assert rankdata(p1).tolist() == [1.0, 4.0, 2.0, 3.0, 5.0]
    assert m.auc_macro == pytest.approx((4 + 3 + 5 - 6) / 6)
    assert m.n == 5 and sum(map(sum, m.confusion_matrix)) == 5
    assert binary_auc([0, 1], [np.inf, 0.5]) == 0.0
