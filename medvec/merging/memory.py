"""``merge_state_dicts``: the same merge on in-memory state dicts (simulation, tuning).

The tensors are handed to the engine's numpy kernels as arrays of their bytes (no copy for
float32) and the merged arrays come back as tensors, so both paths give the same bits.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor

from medvec.errors import MergeError
from medvec.merging.base import MergeStrategy, StrategyParams, TensorContext
from medvec.merging.combine import combine_chunk, vector_stats
from medvec.merging.registry import get_strategy
from medvec.merging.weighting import resolve_weights
from medvec.vectors.compute import floating_keys
from medvec.vectors.floats import storage_dtype, widen_into, work_dtype
from medvec.vectors.header import dtype_name

__all__ = ["merge_state_dicts"]


def _check_vectors(
    base_state: Mapping[str, Tensor], vectors: Sequence[Mapping[str, Tensor]]
) -> None:
    if not vectors:
        raise MergeError("no vectors to merge", hint="pass at least one data vector")
    expected = floating_keys(base_state)
    for index, vector in enumerate(vectors):
        if set(vector) != set(expected):
            missing = sorted(set(expected) - set(vector))
            extra = sorted(set(vector) - set(expected))
            raise MergeError(
                f"vector {index} does not match the base: missing {missing[:3]}, "
                f"unexpected {extra[:3]}",
                hint="every vector must hold the base's floating-point tensors",
            )
        for key in expected:
            if vector[key].shape != base_state[key].shape:
                raise MergeError(
                    f"vector {index} tensor {key!r} has shape {tuple(vector[key].shape)}, "
                    f"expected {tuple(base_state[key].shape)}",
                    hint="every vector must come from the same architecture as the base",
                )


def _work(tensor: Tensor, name: str) -> NDArray[Any]:
    """``tensor``'s elements as a flat work array (float32, or float64 for float64)."""
    raw = tensor.contiguous().reshape(-1).view(torch.uint8).numpy().view(storage_dtype(name))
    return widen_into(raw, name, np.empty(raw.size, dtype=work_dtype(name)))


def _tensor(values: NDArray[Any], like: Tensor) -> Tensor:
    """A tensor shaped and typed as ``like`` from storage elements ``values``."""
    raw = torch.from_numpy(np.ascontiguousarray(values).view(np.uint8).copy())
    return raw.view(like.dtype).reshape(like.shape)


def merge_state_dicts(
    base_state: Mapping[str, Tensor],
    vectors: Sequence[Mapping[str, Tensor]],
    *,
    strategy: str | MergeStrategy,
    params: StrategyParams | Mapping[str, object] | None = None,
    weights: Sequence[float] | None = None,
    seed: int = 0,
    num_samples: Sequence[int] | None = None,
) -> dict[str, Tensor]:
    """``base + combine(vectors)`` in memory, with the engine's kernels.

    ``num_samples`` feeds the default weights of ``weighted_mean`` (uniform when
    absent). Integer buffers are copied from the base.
    """
    chosen = get_strategy(strategy)
    parsed = chosen.parse_params(params)
    _check_vectors(base_state, vectors)
    resolved = resolve_weights(chosen, weights, num_samples, len(vectors))
    weight_array = np.array(resolved or [1.0] * len(vectors), dtype=np.float64)
    merged: dict[str, Tensor] = {}
    for key, base in base_state.items():
        base = base.detach().cpu()
        if not torch.is_floating_point(base):
            merged[key] = base.clone()
            continue
        name = dtype_name(base.dtype)
        deltas = np.stack([_work(v[key].detach().cpu().to(base.dtype), name) for v in vectors])
        ctx = TensorContext(
            key=key,
            seed=seed,
            offset=0,
            numel=base.numel(),
            stats=vector_stats(chosen, parsed, key, deltas),
        )
        out = combine_chunk(chosen, parsed, _work(base, name), deltas, weight_array, ctx, name)
        merged[key] = _tensor(out, base)
    return merged
