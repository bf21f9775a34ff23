"""The promotion gate: may a candidate model replace production?

Both are measured on the same benchmark split (``medvec.metrics.Metrics`` as dicts).
The candidate passes when, for every gate metric, it is no worse than production by
more than the tolerance, overall (``accuracy``, ``auc_macro``, ...) and, when
``class_metrics`` names any, per class (``sensitivity``, ``specificity``, ``auc``
lists), and when every per-class sensitivity is at or above the floor. A metric that
is ``None`` (a class absent from the split) is not compared. Without a production
model only the floor applies. By default the gate compares the overall metrics only:
the per-class rule, measured on a virtual clock, refused every candidate after a
degenerate first version that predicts few classes, and kept that version in
production for a whole run (docs/merging.md).

Sampling noise: a validation split is a sample, and a class of 40 images moves its
sensitivity by 2.5 points per image. When both metric sets carry their image counts
(``n`` and the confusion matrix, as every stored evaluation does), a drop fails only
when it is larger than the tolerance *and* larger than ``noise_z`` standard errors of
the difference of the two estimates: binomial for accuracy, sensitivity and
specificity (on the class's images, or the other classes'), the mean of the classes'
for balanced accuracy, Hanley and McNeil's (1982) for AUC. The standard error treats
the two evaluations as independent samples, so it is larger than the paired one of two
models scored on the same images: the gate leans toward passing a candidate whose loss
noise explains. ``noise_z = 0`` compares the point estimates only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["GateCheck", "GatePolicy", "gate_checks", "noise_allowance"]

CheckKind = Literal["no_worse", "floor"]


class GatePolicy(BaseModel):
    model_config = ConfigDict(frozen=True)

    metrics: tuple[str, ...] = ("accuracy", "balanced_accuracy", "auc_macro")
    tolerance: float = Field(default=0.0, ge=0)
    #: per-class rules are opt-in (see the module's docstring)
    class_metrics: tuple[str, ...] = ()
    class_tolerance: float = Field(default=0.05, ge=0)
    sensitivity_floor: float = Field(default=0.0, ge=0, le=1)
    #: one-sided 95%: a drop within 1.645 standard errors of the difference is noise
    noise_z: float = Field(default=1.645, ge=0)


class GateCheck(BaseModel):
    """One comparison: ``candidate`` must be >= ``threshold``; ``noise`` is the drop that
    sampling noise explains (``noise_z`` standard errors of the difference; 0 when the
    metrics carry no image counts)."""

    model_config = ConfigDict(frozen=True)

    metric: str
    class_index: int | None = None
    kind: CheckKind
    candidate: float
    production: float | None = None
    threshold: float
    noise: float = 0.0
    passed: bool


def _number(value: Any) -> float | None:
    return None if value is None else float(value)


def _no_worse(
    metric: str,
    index: int | None,
    candidate: float,
    production: float,
    tolerance: float,
    noise: float,
) -> GateCheck:
    threshold = production - max(tolerance, noise)
    return GateCheck(
        metric=metric, class_index=index, kind="no_worse", candidate=candidate,
        production=production, threshold=threshold, noise=noise,
        passed=candidate >= threshold - 1e-12,
    )  # fmt: skip


def _per_class(values: Any) -> Sequence[Any]:
    return list(values) if isinstance(values, list | tuple) else []


def _class_counts(metrics: Mapping[str, Any]) -> list[int] | None:
    """Images per true class (the confusion matrix's row sums), when the metrics hold it."""
    matrix = metrics.get("confusion_matrix")
    if not isinstance(matrix, list) or not matrix:
        return None
    return [int(sum(row)) for row in matrix]


def _binomial_variance(p: float, n: int) -> float | None:
    return p * (1.0 - p) / n if n > 0 else None


def _auc_variance(auc: float, positives: int, negatives: int) -> float | None:
    """Hanley and McNeil's variance of an AUC from ``positives`` and ``negatives``."""
    if positives <= 0 or negatives <= 0:
        return None
    q1, q2 = auc / (2.0 - auc), 2.0 * auc * auc / (1.0 + auc)
    spread = (positives - 1) * (q1 - auc * auc) + (negatives - 1) * (q2 - auc * auc)
    return max(auc * (1.0 - auc) + spread, 0.0) / (positives * negatives)


def _mean_variance(variances: Sequence[float | None]) -> float | None:
    """Variance of the mean of independent estimates (``None`` ones are not in the mean)."""
    known = [v for v in variances if v is not None]
    return sum(known) / len(known) ** 2 if known else None


def _class_variance(metric: str, value: float, index: int, counts: list[int]) -> float | None:
    if index >= len(counts):
        return None
    own, others = counts[index], sum(counts) - counts[index]
    if metric == "sensitivity":
        return _binomial_variance(value, own)
    if metric == "specificity":
        return _binomial_variance(value, others)
    if metric == "auc":
        return _auc_variance(value, own, others)
    return None


def _variance(
    metrics: Mapping[str, Any], metric: str, index: int | None, value: float
) -> float | None:
    """The sampling variance of ``metrics[metric]`` (``[index]``), where it is known."""
    counts = _class_counts(metrics)
    if counts is None:
        return None
    if index is not None:
        return _class_variance(metric, value, index, counts)
    if metric == "accuracy":
        return _binomial_variance(value, sum(counts))
    per_class = {"balanced_accuracy": "sensitivity", "auc_macro": "auc"}.get(metric)
    if per_class is None:
        return None
    values = _per_class(metrics.get(per_class))
    return _mean_variance(
        [
            None if v is None else _class_variance(per_class, float(v), c, counts)
            for c, v in enumerate(values)
        ]
    )


def noise_allowance(
    candidate: Mapping[str, Any],
    production: Mapping[str, Any],
    metric: str,
    index: int | None,
    values: tuple[float, float],
    z: float,
) -> float:
    """``z`` standard errors of the difference between the two estimates of ``metric``;
    0 when either side lacks what its variance needs."""
    mine = _variance(candidate, metric, index, values[0])
    theirs = _variance(production, metric, index, values[1])
    if z <= 0 or mine is None or theirs is None:
        return 0.0
    return z * math.sqrt(mine + theirs)


def gate_checks(
    candidate: Mapping[str, Any], production: Mapping[str, Any] | None, policy: GatePolicy
) -> list[GateCheck]:
    """Every check of ``candidate`` against ``production`` (``None``: none in production)."""
    checks: list[GateCheck] = []
    if production is not None:
        for metric in policy.metrics:
            mine, theirs = _number(candidate.get(metric)), _number(production.get(metric))
            if mine is not None and theirs is not None:
                noise = noise_allowance(
                    candidate, production, metric, None, (mine, theirs), policy.noise_z
                )
                checks.append(_no_worse(metric, None, mine, theirs, policy.tolerance, noise))
        for metric in policy.class_metrics:
            pairs = zip(
                _per_class(candidate.get(metric)), _per_class(production.get(metric)), strict=False
            )
            for index, (mine_raw, theirs_raw) in enumerate(pairs):
                mine, theirs = _number(mine_raw), _number(theirs_raw)
                if mine is not None and theirs is not None:
                    noise = noise_allowance(
                        candidate, production, metric, index, (mine, theirs), policy.noise_z
                    )
                    checks.append(
                        _no_worse(metric, index, mine, theirs, policy.class_tolerance, noise)
                    )
    for index, value in enumerate(_per_class(candidate.get("sensitivity"))):
        mine = _number(value)
        if mine is not None and policy.sensitivity_floor > 0:
            checks.append(
                GateCheck(
                    metric="sensitivity",
                    class_index=index,
                    kind="floor",
                    candidate=mine,
                    threshold=policy.sensitivity_floor,
                    passed=mine >= policy.sensitivity_floor,
                )  # fmt: skip
            )
    return checks
