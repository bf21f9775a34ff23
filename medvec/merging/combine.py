"""The step the streaming engine and the in-memory merge share: one chunk in, weights out."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import Tensor

from medvec.errors import MergeError
from medvec.merging.base import MergeStrategy, StrategyParams, TensorContext

__all__ = ["add_to_base", "combine_chunk", "compute_dtype", "vector_stats"]


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Half-precision tensors are combined in float32; float64 stays float64."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def vector_stats(
    strategy: MergeStrategy, params: StrategyParams, rows: Iterable[Tensor]
) -> Tensor | None:
    """Per-vector statistics over whole tensors, for strategies that ask for them.

    ``rows`` is consumed one at a time, so it may reuse one buffer.
    """
    if not strategy.needs_stats:
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
    delta = strategy.merge_tensor(
        ctx.key, base_work, work, weights.to(dtype), params=params, ctx=ctx
    )
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
