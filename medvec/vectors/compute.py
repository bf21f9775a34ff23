"""Data vectors as tensors: ``tau = theta_finetuned - theta_base`` and its inverse.

Only floating-point tensors take part: integer buffers such as BatchNorm's
``num_batches_tracked`` count steps, and a difference of counters is meaningless
to merge. ``apply_vector`` copies those buffers from the base unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from medvec.vectors.errors import VectorDtypeError, VectorKeysError, VectorShapeError
from medvec.vectors.names import RUNNING_STAT_SUFFIXES, is_running_stat

__all__ = [
    "RUNNING_STAT_SUFFIXES",
    "apply_vector",
    "compute_vector",
    "floating_keys",
    "is_running_stat",
]


def floating_keys(state: Mapping[str, Tensor]) -> list[str]:
    """Names of the floating-point tensors of a state dict, in its order."""
    return [k for k, v in state.items() if torch.is_floating_point(v)]


def _check_pair(key: str, base: Tensor, other: Tensor, what: str) -> None:
    if tuple(other.shape) != tuple(base.shape):
        raise VectorShapeError(
            f"{what} tensor {key!r} has shape {tuple(other.shape)}, base has {tuple(base.shape)}",
            hint="both must come from the same architecture and config",
            tensor=key,
        )
    if other.dtype != base.dtype:
        raise VectorDtypeError(
            f"{what} tensor {key!r} is {other.dtype}, base is {base.dtype}",
            hint="keep the base's dtypes (convert before computing the vector)",
            tensor=key,
        )


def _check_keys(expected: list[str], got: list[str], what: str) -> None:
    missing = [k for k in expected if k not in set(got)]
    extra = [k for k in got if k not in set(expected)]
    if missing or extra:
        first = f"missing {missing[0]!r}" if missing else f"unexpected {extra[0]!r}"
        raise VectorKeysError(
            f"{what} does not match the base: {len(missing)} missing, {len(extra)} unexpected "
            f"tensors (first: {first})",
            hint="both state dicts must come from the same architecture and config",
            missing=missing[:20],
            unexpected=extra[:20],
        )


def compute_vector(
    base_state: Mapping[str, Tensor], finetuned_state: Mapping[str, Tensor]
) -> dict[str, Tensor]:
    """``finetuned - base`` over the base's floating-point tensors, on the CPU."""
    keys = floating_keys(base_state)
    _check_keys(list(base_state), list(finetuned_state), "fine-tuned state dict")
    vector: dict[str, Tensor] = {}
    for key in keys:
        base, tuned = base_state[key].detach().cpu(), finetuned_state[key].detach().cpu()
        _check_pair(key, base, tuned, "fine-tuned")
        vector[key] = (tuned - base).contiguous()
    return vector


def apply_vector(
    base_state: Mapping[str, Tensor], vector: Mapping[str, Tensor], scale: float = 1.0
) -> dict[str, Tensor]:
    """``base + scale * vector`` on floating tensors; other tensors copied from the base."""
    _check_keys(floating_keys(base_state), list(vector), "vector")
    out: dict[str, Tensor] = {}
    for key, base in base_state.items():
        base = base.detach().cpu()
        if key in vector:
            delta = vector[key].detach().cpu()
            _check_pair(key, base, delta, "vector")
            out[key] = base + delta * scale if scale != 1.0 else base + delta
        else:
            out[key] = base.clone()
    return out
