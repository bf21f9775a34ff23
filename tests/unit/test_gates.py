"""The promotion gate's comparisons, with hand-computed thresholds."""

from __future__ import annotations

import math

import numpy as np
import pytest

from medvec.gates import GatePolicy, gate_checks, noise_allowance

PRODUCTION = {"accuracy": 0.80, "auc_macro": 0.90, "sensitivity": [0.9, 0.6, None]}


def _failed(candidate: dict[str, object], policy: GatePolicy) -> list[tuple[str, int | None]]:
    checks = gate_checks(candidate, PRODUCTION, policy)
    return [(c.metric, c.class_index) for c in checks if not c.passed]


def test_no_worse_overall_and_per_class_within_tolerances() -> None:
    policy = GatePolicy(
        metrics=("accuracy", "auc_macro"),
        tolerance=0.01,
        class_metrics=("sensitivity",),
        class_tolerance=0.05,
    )
    better = {"accuracy": 0.795, "auc_macro": 0.95, "sensitivity": [0.86, 0.7, 0.1]}
    assert _failed(better, policy) == []
    worse = {"accuracy": 0.78, "auc_macro": 0.95, "sensitivity": [0.84, 0.7, 0.0]}
    assert _failed(worse, policy) == [("accuracy", None), ("sensitivity", 0)]
    (accuracy,) = [c for c in gate_checks(worse, PRODUCTION, policy) if c.metric == "accuracy"]
    assert accuracy.threshold == pytest.approx(0.79) and accuracy.production == 0.80


def test_the_default_gate_compares_overall_metrics_only() -> None:
    """A class that falls from 0.9 to 0.1 sensitivity does not refuse a candidate that is
    no worse overall: the per-class rule is opt-in (``class_metrics``)."""
    assert GatePolicy().class_metrics == ()
    candidate = {"accuracy": 0.81, "auc_macro": 0.91, "sensitivity": [0.1, 0.9, None]}
    checks = gate_checks(candidate, PRODUCTION, GatePolicy())
    assert [(c.metric, c.class_index, c.passed) for c in checks] == [
        ("accuracy", None, True),
        ("auc_macro", None, True),
    ]
    per_class = GatePolicy(class_metrics=("sensitivity",))
    assert _failed(candidate, per_class) == [("sensitivity", 0)]


def test_the_floor_applies_with_or_without_production() -> None:
    policy = GatePolicy(metrics=(), class_metrics=(), sensitivity_floor=0.5)
    candidate = {"sensitivity": [0.9, 0.4, None]}
    alone = gate_checks(candidate, None, policy)
    assert [(c.kind, c.class_index, c.passed) for c in alone] == [
        ("floor", 0, True),
        ("floor", 1, False),
    ]
    against = gate_checks(candidate, PRODUCTION, policy)
    assert [c.class_index for c in against if not c.passed] == [1]


def test_a_metric_missing_on_either_side_is_not_compared() -> None:
    policy = GatePolicy(metrics=("accuracy", "auc_macro"))
    checks = gate_checks({"accuracy": 0.9, "auc_macro": None}, PRODUCTION, policy)
    assert [c.metric for c in checks] == ["accuracy"]


def _evaluated(sensitivity: list[float], counts: list[int]) -> dict[str, object]:
    """Metrics as an evaluation stores them: rates and the confusion matrix they come from
    (two classes; each class's misses predicted as the other)."""
    hits = [round(s * n) for s, n in zip(sensitivity, counts, strict=True)]
    matrix = [[hits[0], counts[0] - hits[0]], [counts[1] - hits[1], hits[1]]]
    return {
        "n": sum(counts),
        "accuracy": sum(hits) / sum(counts),
        "sensitivity": [h / n for h, n in zip(hits, counts, strict=True)],
        "confusion_matrix": matrix,
    }


def test_a_drop_that_sampling_noise_explains_passes_and_a_real_one_fails() -> None:
    # the demo's generation 2: a class of 75 validation images lost 5 of them
    production = _evaluated([61 / 75, 0.9], [75, 50])
    candidate = _evaluated([56 / 75, 0.9], [75, 50])
    policy = GatePolicy(metrics=("accuracy",), class_metrics=("sensitivity",), class_tolerance=0.05)
    checks = {(c.metric, c.class_index): c for c in gate_checks(candidate, production, policy)}
    sens = checks[("sensitivity", 0)]
    p, q = 56 / 75, 61 / 75
    assert sens.noise == pytest.approx(1.645 * math.sqrt(p * (1 - p) / 75 + q * (1 - q) / 75))
    assert sens.threshold == pytest.approx(q - sens.noise) and sens.passed
    acc = checks[("accuracy", None)]
    a, b = 101 / 125, 106 / 125
    assert acc.noise == pytest.approx(1.645 * math.sqrt(a * (1 - a) / 125 + b * (1 - b) / 125))
    assert acc.passed
    # the same point estimates without the noise allowance fail, as before
    strict = gate_checks(candidate, production, policy.model_copy(update={"noise_z": 0.0}))
    assert {(c.metric, c.class_index) for c in strict if not c.passed} == {
        ("accuracy", None),
        ("sensitivity", 0),
    }
    # a class that loses 15 of its 75 images is not noise
    collapsed = _evaluated([46 / 75, 0.9], [75, 50])
    checks_collapsed = gate_checks(collapsed, production, policy)
    failed = {(c.metric, c.class_index) for c in checks_collapsed if not c.passed}
    assert failed == {("accuracy", None), ("sensitivity", 0)}


def test_the_auc_standard_error_matches_the_spread_of_real_aucs() -> None:
    """Hanley and McNeil's standard error against the spread of AUCs over 2,000 draws of
    100 positives and 100 negatives with binormal scores (true AUC about 0.86)."""
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    labels = np.r_[np.ones(100), np.zeros(100)]
    aucs = [
        roc_auc_score(labels, np.r_[rng.normal(1.5, 1, 100), rng.normal(0, 1, 100)])
        for _ in range(2000)
    ]
    mean_auc = float(np.mean(aucs))
    two = {"confusion_matrix": [[100, 0], [0, 100]], "auc": [mean_auc, mean_auc]}
    noise = noise_allowance(two, two, "auc", 1, (mean_auc, mean_auc), z=1.0)
    assert noise / math.sqrt(2) == pytest.approx(float(np.std(aucs)), rel=0.1)


def test_metrics_without_image_counts_compare_point_estimates() -> None:
    checks = gate_checks({"accuracy": 0.79}, {"accuracy": 0.80}, GatePolicy(metrics=("accuracy",)))
    assert [(c.noise, c.passed) for c in checks] == [(0.0, False)]
