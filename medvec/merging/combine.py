"""The step the streaming engine and the in-memory merge share: one chunk in, weights out.

Running statistics of normalisation layers (``*.running_mean``, ``*.running_var``) are
not weights: trimming, dropping, sign-electing or scaling them yields statistics of no
network at all. Whatever the strategy, they are combined as the plain weighted mean of
the deltas (weights normalised to sum 1, uniform for strategies that take none), and
recomputed on calibration images afterwards where such images exist.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import Tensor

from medvec.errors import MergeError
from medvec.merging import masks
from medvec.merging.base import MergeStrategy, StrategyParams, TensorContext
from medvec.vectors.compute import is_running_stat

__all__ = [
    "add_to_base",
    "combine_chunk",
    "compute_dtype",
    "linear_coefficients",
    "vector_stats",
]


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Half-precision tensors are combined in float32; float64 stays float64."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def linear_coefficients(
    strategy: MergeStrategy, params: StrategyParams, key: str, weights: Tensor
) -> Tensor | None:
    """``c`` such that tensor ``key``'s merged delta is ``sum_i c_i tau_i``; ``None`` if the
    strategy is not linear. A running statistic always gets ``w_i / sum_j w_j``."""
    if is_running_stat(key):
        return weights / weights.sum()
    return strategy.coefficients(weights, params)


def vector_stats(
    strategy: MergeStrategy, params: StrategyParams, key: str, rows: Iterable[Tensor]
) -> Tensor | None:
    """Per-vector statistics over whole tensors, for strategies that ask for them (none
    for running statistics, which are averaged).

    ``rows`` is consumed one at a time, so it may reuse one buffer.
    """
    if not strategy.needs_stats or is_running_stat(key):
        return None
    values = [strategy.vector_stat(row.reshape(-1).to(torch.float32), params) for row in rows]
    return torch.tensor(values, dtype=torch.float64)


def combine_chunk(
    strategy: MergeStrategy,
    params: StrategyParams,
    base: Tensor,
    deltas: Tensor,
    weights: Tensor,
    ctx: TensorContext,
) -> Tensor:
    """``base + combine(deltas)`` for one chunk, in the base's dtype; refuses non-finite output.

    ``base`` is ``(count,)`` and ``deltas`` ``(N, count)`` in the storage dtype.
    """
    dtype = compute_dtype(base.dtype)
    work = deltas if deltas.dtype == dtype else deltas.to(dtype)
    base_work = base if base.dtype == dtype else base.to(dtype)
    cast = weights.to(dtype)
    coefficients = linear_coefficients(strategy, params, ctx.key, cast)
    if coefficients is not None:
        delta = masks.linear_combination(work, coefficients)
    else:
        delta = strategy.merge_tensor(ctx.key, base_work, work, cast, params=params, ctx=ctx)
    return add_to_base(base, delta, ctx.key)


def add_to_base(base: Tensor, delta: Tensor, key: str) -> Tensor:
    """``base + delta`` in the base's dtype; ``MergeError`` if any value is not finite."""
    dtype = compute_dtype(base.dtype)
    base_work = base if base.dtype == dtype else base.to(dtype)
    merged = (base_work + delta).to(base.dtype)
    # min and max propagate NaN and show infinities; on the CPU they cost a fraction
    # of torch.isfinite(...).all().
    low, high = torch.aminmax(merged) if merged.numel() else (merged.new_zeros(()),) * 2
    if not (math.isfinite(float(low)) and math.isfinite(float(high))):
        raise MergeError(
            f"merging tensor {key!r} gave NaN or infinite values",
            hint="validate the input vectors (`medvec vector validate`) and check the weights",
            tensor=key,
        )
    return merged
