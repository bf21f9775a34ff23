"""Classification metrics as pure numpy functions over ``y_true`` and class probabilities.

``compute_metrics`` gathers them into one ``Metrics`` record: accuracy, balanced
accuracy, macro AUC (one-vs-rest; the plain AUC for two classes), macro F1,
per-class sensitivity and specificity, the confusion matrix and the expected
calibration error. AUC uses the Mann-Whitney rank statistic with average ranks
for ties, which equals the area under the ROC curve, so no scikit-learn is needed.
Undefined values (a class with no positive or no negative sample) are ``None``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict

__all__ = [
    "ECE_BINS",
    "Metrics",
    "binary_auc",
    "compute_metrics",
    "confusion_matrix",
    "expected_calibration_error",
    "rankdata",
]

ECE_BINS = 15


class Metrics(BaseModel):
    """The metric set stored per model version and benchmark split."""

    model_config = ConfigDict(frozen=True)

    n: int
    num_classes: int
    accuracy: float
    balanced_accuracy: float
    auc_macro: float | None
    auc: list[float | None]
    f1_macro: float
    sensitivity: list[float | None]
    specificity: list[float | None]
    confusion_matrix: list[list[int]]
    ece: float


def _ratio(num: float, den: float) -> float | None:
    return float(num / den) if den > 0 else None


def confusion_matrix(y_true: Any, y_pred: Any, num_classes: int) -> np.ndarray:
    """``K x K`` counts; rows are true classes, columns predicted classes."""
    t, p = np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)
    flat = np.bincount(t * num_classes + p, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes)


def rankdata(values: Any) -> np.ndarray:
    """1-based ranks; tied values share the mean of the ranks they span."""
    x = np.asarray(values, dtype=np.float64)
    order = np.argsort(x, kind="mergesort")
    ordered = x[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    ends = np.r_[starts[1:], len(x)]
    mean_rank = (starts + ends + 1) / 2.0
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = np.repeat(mean_rank, ends - starts)
    return ranks


def binary_auc(positive: Any, scores: Any) -> float | None:
    """ROC AUC of ``scores`` for the boolean ``positive`` labels (Mann-Whitney U / n1 n0)."""
    pos = np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = rankdata(scores)
    u = ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def expected_calibration_error(y_true: Any, probs: Any, bins: int = ECE_BINS) -> float:
    """ECE (Guo et al. 2017): confidence in ``bins`` equal-width bins ``(lo, hi]``,
    the sample-weighted mean of ``|accuracy - mean confidence|`` per bin."""
    p = np.asarray(probs, dtype=np.float64)
    t = np.asarray(y_true, dtype=np.int64)
    if len(t) == 0:
        return 0.0
    confidence = p.max(axis=1)
    correct = (p.argmax(axis=1) == t).astype(np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    counts = np.bincount(which, minlength=bins)
    gap = np.bincount(which, weights=correct - confidence, minlength=bins)
    return float(np.abs(gap[counts > 0]).sum() / len(t))


def _as_probs(probs: Any, n: int) -> np.ndarray:
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim == 1:
        p = np.stack([1.0 - p, p], axis=1)
    if p.ndim != 2 or p.shape[0] != n:
        raise ValueError(f"probs must be (N, K) or (N,) for N={n}; got shape {p.shape}")
    return p


def compute_metrics(y_true: Any, probs: Any, num_classes: int | None = None) -> Metrics:
    """All metrics of predictions ``probs`` (``N x K`` probabilities) against ``y_true``."""
    t = np.asarray(y_true).reshape(-1).astype(np.int64)
    p = _as_probs(probs, len(t))
    k = num_classes or p.shape[1]
    if len(t) and (t.min() < 0 or t.max() >= k):
        raise ValueError(f"labels must lie in 0..{k - 1}; got {t.min()}..{t.max()}")
    pred = p.argmax(axis=1)
    cm = confusion_matrix(t, pred, k)
    tp = np.diag(cm).astype(np.float64)
    support, predicted = cm.sum(axis=1), cm.sum(axis=0)
    fn, fp = support - tp, predicted - tp
    tn = len(t) - tp - fn - fp
    sensitivity = [_ratio(tp[c], support[c]) for c in range(k)]
    specificity = [_ratio(tn[c], tn[c] + fp[c]) for c in range(k)]
    recalls = [s for s in sensitivity if s is not None]
    f1_den = 2 * tp + fp + fn
    f1 = [2 * tp[c] / f1_den[c] for c in range(k) if f1_den[c] > 0]
    if k == 2:
        auc = [binary_auc(t == 1, p[:, 1])] * 2
        auc_macro = auc[1]
    else:
        auc = [binary_auc(t == c, p[:, c]) for c in range(k)]
        defined = [a for a in auc if a is not None]
        auc_macro = float(np.mean(defined)) if defined else None
    return Metrics(
        n=len(t),
        num_classes=k,
        accuracy=float(tp.sum() / len(t)) if len(t) else 0.0,
        balanced_accuracy=float(np.mean(recalls)) if recalls else 0.0,
        auc_macro=auc_macro,
        auc=auc,
        f1_macro=float(np.mean(f1)) if f1 else 0.0,
        sensitivity=sensitivity,
        specificity=specificity,
        confusion_matrix=cm.astype(int).tolist(),
        ece=expected_calibration_error(t, p),
    )
