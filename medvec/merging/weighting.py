"""Merge weights: from sample counts, uniform, given by the caller, or staleness-scaled."""

from __future__ import annotations

import math
from collections.abc import Sequence

from medvec.errors import MergeError
from medvec.merging.base import MergeStrategy

__all__ = [
    "check_weights",
    "resolve_weights",
    "sample_weights",
    "staleness_weights",
    "uniform_weights",
]


def uniform_weights(n: int) -> list[float]:
    return [1.0] * n


def sample_weights(num_samples: Sequence[int]) -> list[float]:
    """Weights proportional to the training samples behind each vector (FedAvg)."""
    return [float(n) for n in num_samples]


def staleness_weights(staleness: Sequence[int | float], exponent: float = 0.5) -> list[float]:
    """``(1 + s) ** -a`` per vector: a vector ``s`` generations old counts less.

    ``a = 0`` ignores staleness; ``a = 0.5`` gives FedAsync's polynomial
    ``1/sqrt(1 + s)`` (Xie et al., "Asynchronous Federated Optimization", 2019).
    """
    if exponent < 0 or any(s < 0 for s in staleness):
        raise MergeError("staleness and its exponent must be >= 0", hint="pass s >= 0, a >= 0")
    return [(1.0 + float(s)) ** -exponent for s in staleness]


def check_weights(weights: Sequence[float], n: int) -> list[float]:
    """One finite, non-negative weight per vector, not all zero."""
    values = [float(w) for w in weights]
    if len(values) != n:
        raise MergeError(
            f"{len(values)} weights given for {n} vectors",
            hint="pass exactly one weight per vector, in the order of the vectors",
        )
    if any(not math.isfinite(w) or w < 0 for w in values):
        raise MergeError("weights must be finite and >= 0", hint=f"got {values}")
    if n and not any(values):
        raise MergeError("all weights are zero", hint="give at least one vector a weight > 0")
    return values


def resolve_weights(
    strategy: MergeStrategy,
    weights: Sequence[float] | None,
    num_samples: Sequence[int] | None,
    n: int,
) -> list[float] | None:
    """The weights a merge uses: given, else the strategy's default; ``None`` if unused."""
    if not strategy.uses_weights:
        if weights is not None:
            raise MergeError(
                f"{strategy.name} does not use weights",
                hint="drop --weights, or choose weighted_mean, task_arithmetic, ties or dare",
            )
        return None
    if weights is not None:
        return check_weights(weights, n)
    if strategy.default_weighting == "samples" and num_samples is not None:
        return check_weights(sample_weights(num_samples), n)
    return uniform_weights(n)
