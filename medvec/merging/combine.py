"""The step the streaming engine and the in-memory merge share: one chunk in, weights out.

Everything here is numpy: chunks arrive as work arrays (float32, or float64 for float64
tensors; ``medvec.vectors.floats``) and leave in the storage dtype of the tensor.

Running statistics of normalisation layers (``*.running_mean``, ``*.running_var``) are
not weights: trimming, dropping, sign-electing or scaling them yields statistics of no
network at all. Whatever the strategy, they are combined as the plain weighted mean of
the deltas (weights normalised to sum 1, uniform for strategies that take none), and
recomputed on calibration images afterwards where such images exist.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np
from numpy.typing import NDArray

from medvec.errors import MergeError
from medvec.merging import masks
from medvec.merging.base import Array, MergeStrategy, StrategyParams, TensorContext
from medvec.vectors.floats import narrow
from medvec.vectors.names import is_running_stat

__all__ = [
    "add_to_base",
    "combine_chunk",
    "linear_coefficients",
    "vector_stats",
]


def linear_coefficients(
    strategy: MergeStrategy, params: StrategyParams, key: str, weights: Array
) -> Array | None:
    """``c`` such that tensor ``key``'s merged delta is ``sum_i c_i tau_i``; ``None`` if the
    strategy is not linear. A running statistic always gets ``w_i / sum_j w_j``."""
    if is_running_stat(key):
        normalised: Array = weights / weights.sum()
        return normalised
    return strategy.coefficients(weights, params)


def vector_stats(
    strategy: MergeStrategy, params: StrategyParams, key: str, rows: Iterable[Array]
) -> NDArray[np.float64] | None:
    """Per-vector statistics over whole tensors (work arrays), for strategies that ask for
    them (none for running statistics, which are averaged).

    ``rows`` is consumed one at a time, so it may reuse one buffer.
    """
    if not strategy.needs_stats or is_running_stat(key):
        return None
    values = [strategy.vector_stat(row.reshape(-1), params) for row in rows]
    return np.array(values, dtype=np.float64)


def combine_chunk(
    strategy: MergeStrategy,
    params: StrategyParams,
    base: Array,
    deltas: Array,
    weights: NDArray[np.float64],
    ctx: TensorContext,
    dtype_name: str,
) -> NDArray[Any]:
    """``base + combine(deltas)`` for one chunk, in storage dtype ``dtype_name``; refuses
    non-finite output.

    ``base`` is ``(count,)`` and ``deltas`` ``(N, count)``, both work arrays.
    """
    cast = weights.astype(deltas.dtype)
    coefficients = linear_coefficients(strategy, params, ctx.key, cast)
    if coefficients is not None:
        delta = masks.linear_combination(deltas, coefficients)
    else:
        delta = strategy.merge_tensor(ctx.key, base, deltas, cast, params=params, ctx=ctx)
    return add_to_base(base, delta, ctx.key, dtype_name)


def add_to_base(base: Array, delta: Array, key: str, dtype_name: str) -> NDArray[Any]:
    """``base + delta`` (work arrays) rounded to storage dtype ``dtype_name``; ``MergeError``
    if any value is not finite there."""
    merged = narrow(base + delta, dtype_name)
    if merged.size and not _finite(merged, dtype_name):
        raise MergeError(
            f"merging tensor {key!r} gave NaN or infinite values",
            hint="validate the input vectors (`medvec vector validate`) and check the weights",
            tensor=key,
        )
    return merged


def _finite(values: NDArray[Any], dtype_name: str) -> bool:
    if dtype_name == "BF16":  # bits: an all-ones exponent is infinity or NaN
        return not bool(np.any((values & 0x7F80) == 0x7F80))
    # min and max propagate NaN and show infinities in two vectorised passes
    return math.isfinite(float(values.min())) and math.isfinite(float(values.max()))
