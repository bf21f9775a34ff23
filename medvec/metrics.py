"""Classification metrics over ``y_true`` and class probabilities.

``compute_metrics`` gathers them into one ``Metrics`` record: accuracy, balanced
accuracy, macro AUC (one-vs-rest; the plain AUC for two classes), macro F1,
per-class sensitivity and specificity, the confusion matrix and the expected
calibration error. The confusion matrix, ROC AUC and F1 come from scikit-learn
(``sklearn.metrics``) and tie-averaged ranks from SciPy; what stays written here is
what those libraries do not offer in the form stored per version:

- a class with no positive or no negative sample has an undefined AUC, sensitivity or
  specificity: it is ``None`` here (scikit-learn raises or warns and returns 0);
- the macro AUC averages only the defined per-class AUCs (``roc_auc_score(...,
  multi_class="ovr")`` refuses a split where a class is absent);
- accuracy, sensitivity, specificity and balanced accuracy are read off the confusion
  matrix, so they share its ``None`` rule;
- ``roc_auc_score`` refuses NaN or infinite scores, which a merged model can output
  before its BatchNorm statistics are recomputed: those AUCs keep the rank statistic
  (see :func:`binary_auc`), so such a measurement is a number, not a failed merge;
- scikit-learn has no multi-class expected calibration error (``calibration_curve``
  is binary), so ``expected_calibration_error`` is the Guo et al. (2017) definition,
  and ``reliability_bins`` gives the curve behind it (confidence against accuracy);
- ``bootstrap_intervals`` gives 95% percentile-bootstrap intervals of the metrics read
  off the confusion matrix (accuracy, balanced accuracy, macro F1, per-class
  sensitivity and specificity), resampling the evaluated images with a fixed seed, so
  that a stored evaluation says how far its numbers can be trusted.

scikit-learn is imported on first use, so importing this module stays cheap.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict

__all__ = [
    "BOOTSTRAP_RESAMPLES",
    "ECE_BINS",
    "CalibrationBin",
    "Intervals",
    "Metrics",
    "binary_auc",
    "bootstrap_intervals",
    "compute_metrics",
    "confusion_matrix",
    "expected_calibration_error",
    "rankdata",
    "reliability_bins",
]

ECE_BINS = 15
BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_CHUNK = 50
BOOTSTRAP_SEED = 0

Interval = tuple[float, float]


class CalibrationBin(BaseModel):
    """One non-empty confidence bin ``(lo, hi]`` of the reliability curve."""

    model_config = ConfigDict(frozen=True)

    lo: float
    hi: float
    count: int
    confidence: float
    accuracy: float


class Intervals(BaseModel):
    """95% bootstrap intervals (low, high); ``None`` where the metric is undefined."""

    model_config = ConfigDict(frozen=True)

    level: float = 0.95
    resamples: int
    accuracy: Interval
    balanced_accuracy: Interval
    f1_macro: Interval
    sensitivity: list[Interval | None]
    specificity: list[Interval | None]


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
    calibration: list[CalibrationBin] = []
    intervals: Intervals | None = None


def _ratio(num: float, den: float) -> float | None:
    return float(num / den) if den > 0 else None


def confusion_matrix(y_true: Any, y_pred: Any, num_classes: int) -> np.ndarray:
    """``K x K`` counts; rows are true classes, columns predicted classes."""
    from sklearn.metrics import confusion_matrix as sk_confusion_matrix

    labels = np.arange(num_classes)
    counts: np.ndarray = sk_confusion_matrix(np.asarray(y_true), np.asarray(y_pred), labels=labels)
    return counts


def rankdata(values: Any) -> np.ndarray:
    """1-based ranks; tied values share the mean of the ranks they span (SciPy's). NaN
    values rank above every number, each its own rank in order of appearance (SciPy
    would make every rank NaN)."""
    from scipy.stats import rankdata as sp_rankdata

    x = np.asarray(values, dtype=np.float64)
    nan = np.isnan(x)
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[~nan] = sp_rankdata(x[~nan], method="average")
    ranks[nan] = np.arange(1, int(nan.sum()) + 1) + (len(x) - int(nan.sum()))
    return ranks


def binary_auc(positive: Any, scores: Any) -> float | None:
    """ROC AUC of ``scores`` for the boolean ``positive`` labels; ``None`` when only one
    class is present (scikit-learn raises there).

    scikit-learn refuses non-finite scores, which a merged model can produce before its
    BatchNorm statistics are recomputed (a measurement the merge reports, not a failure);
    for those the AUC is the Mann-Whitney statistic over :func:`rankdata`, NaN ranking
    highest, as this function always computed it.
    """
    from sklearn.metrics import roc_auc_score

    pos = np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    x = np.asarray(scores, dtype=np.float64)
    if np.isfinite(x).all():
        return float(roc_auc_score(pos, x))
    u = rankdata(x)[pos].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def _f1_macro(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean F1 over the classes present in ``y_true`` or the predictions (scikit-learn's
    default label set); 0 for no samples."""
    from sklearn.metrics import f1_score

    if len(y_true) == 0:
        return 0.0
    return float(f1_score(y_true, y_pred, average="macro"))


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


def reliability_bins(y_true: Any, probs: Any, bins: int = ECE_BINS) -> list[CalibrationBin]:
    """The reliability curve in the ECE's bins: per non-empty bin, its mean confidence
    and its accuracy (a calibrated model lies on the diagonal)."""
    p = np.asarray(probs, dtype=np.float64)
    t = np.asarray(y_true, dtype=np.int64)
    if len(t) == 0:
        return []
    confidence = p.max(axis=1)
    correct = (p.argmax(axis=1) == t).astype(np.float64)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    counts = np.bincount(which, minlength=bins)
    conf_sum = np.bincount(which, weights=np.nan_to_num(confidence), minlength=bins)
    correct_sum = np.bincount(which, weights=correct, minlength=bins)
    return [
        CalibrationBin(
            lo=float(edges[b]),
            hi=float(edges[b + 1]),
            count=int(counts[b]),
            confidence=float(conf_sum[b] / counts[b]),
            accuracy=float(correct_sum[b] / counts[b]),
        )
        for b in range(bins)
        if counts[b]
    ]


def _rates(cms: np.ndarray) -> dict[str, np.ndarray]:
    """Per resample (first axis of ``B x K x K`` confusion matrices): the metrics read
    off the matrix, NaN where undefined (as ``None`` in ``Metrics``)."""
    n = cms.sum(axis=(1, 2)).astype(np.float64)
    tp = np.diagonal(cms, axis1=1, axis2=2).astype(np.float64)
    support, predicted = cms.sum(axis=2), cms.sum(axis=1)
    fn, fp = support - tp, predicted - tp
    tn = n[:, None] - tp - fn - fp
    with np.errstate(invalid="ignore", divide="ignore"):
        sensitivity = np.where(support > 0, tp / support, np.nan)
        specificity = np.where(tn + fp > 0, tn / (tn + fp), np.nan)
        f1 = np.where(support + predicted > 0, 2 * tp / (support + predicted), np.nan)
    return {
        "accuracy": tp.sum(axis=1) / n,
        "balanced_accuracy": np.nanmean(np.where(support > 0, sensitivity, np.nan), axis=1),
        "f1_macro": np.nanmean(f1, axis=1),
        "sensitivity": sensitivity,
        "specificity": specificity,
    }


def _interval(samples: np.ndarray, level: float) -> Interval | None:
    finite = samples[np.isfinite(samples)]
    if len(finite) < len(samples) / 2:
        return None
    tail = (1.0 - level) / 2 * 100
    low, high = np.percentile(finite, [tail, 100 - tail])
    return float(low), float(high)


def bootstrap_intervals(
    y_true: Any,
    y_pred: Any,
    num_classes: int,
    *,
    resamples: int = BOOTSTRAP_RESAMPLES,
    level: float = 0.95,
    seed: int = BOOTSTRAP_SEED,
) -> Intervals | None:
    """Percentile-bootstrap intervals: ``resamples`` draws of the N images with
    replacement (seeded), one confusion matrix per draw, the metrics read off each.
    A per-class interval is ``None`` when the class is undefined in most draws."""
    t = np.asarray(y_true, dtype=np.int64).reshape(-1)
    pred = np.asarray(y_pred, dtype=np.int64).reshape(-1)
    n, k = len(t), num_classes
    if n == 0:
        return None
    cells = t * k + pred
    rng = np.random.default_rng(seed)
    chunks = []
    for start in range(0, resamples, BOOTSTRAP_CHUNK):
        b = min(BOOTSTRAP_CHUNK, resamples - start)
        draws = cells[rng.integers(0, n, size=(b, n))] + (np.arange(b) * k * k)[:, None]
        chunks.append(np.bincount(draws.ravel(), minlength=b * k * k).reshape(b, k, k))
    rates = _rates(np.concatenate(chunks))

    def per_class(name: str) -> list[Interval | None]:
        return [_interval(rates[name][:, c], level) for c in range(k)]

    def overall(name: str) -> Interval:
        interval = _interval(rates[name], level)
        assert interval is not None  # every draw has N > 0 images
        return interval

    return Intervals(
        level=level,
        resamples=resamples,
        accuracy=overall("accuracy"),
        balanced_accuracy=overall("balanced_accuracy"),
        f1_macro=overall("f1_macro"),
        sensitivity=per_class("sensitivity"),
        specificity=per_class("specificity"),
    )


def _as_probs(probs: Any, n: int) -> np.ndarray:
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim == 1:
        p = np.stack([1.0 - p, p], axis=1)
    if p.ndim != 2 or p.shape[0] != n:
        raise ValueError(f"probs must be (N, K) or (N,) for N={n}; got shape {p.shape}")
    return p


def compute_metrics(
    y_true: Any, probs: Any, num_classes: int | None = None, *, intervals: bool = False
) -> Metrics:
    """All metrics of predictions ``probs`` (``N x K`` probabilities) against ``y_true``;
    with ``intervals``, their bootstrap intervals too (about a second per 10^4 images,
    so only stored evaluations ask for them)."""
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
        f1_macro=_f1_macro(t, pred),
        sensitivity=sensitivity,
        specificity=specificity,
        confusion_matrix=cm.astype(int).tolist(),
        ece=expected_calibration_error(t, p),
        calibration=reliability_bins(t, p),
        intervals=bootstrap_intervals(t, pred, k) if intervals else None,
    )
