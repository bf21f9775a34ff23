"""Tensor bytes as numpy arrays, and the float32 work arrays the merge computes in.

numpy has no bfloat16: a bfloat16 tensor is held as ``uint16`` (its bits) and widened
to float32 exactly (its bits are the top half of a float32). Narrowing rounds to nearest,
ties to even, as torch's ``Tensor.to(torch.bfloat16)`` does, so merged bfloat16 files
keep the bits the torch engine wrote. float16 and float64 are native to numpy.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from medvec.errors import MergeError

__all__ = ["STORAGE_DTYPES", "narrow", "storage_dtype", "widen_into", "work_dtype"]

#: the numpy dtype whose items hold one element of each safetensors dtype
STORAGE_DTYPES: dict[str, np.dtype] = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U8": np.dtype("u1"),
    "U64": np.dtype("<u8"),
    "BOOL": np.dtype("?"),
    "F8_E4M3": np.dtype("u1"),
    "F8_E5M2": np.dtype("u1"),
}
_MERGEABLE = frozenset({"F64", "F32", "F16", "BF16"})
_BF16_NAN = np.uint16(0x7FC0)


def storage_dtype(name: str) -> np.dtype:
    """The numpy dtype of a safetensors dtype's raw elements (``"BF16"`` -> ``uint16``)."""
    return STORAGE_DTYPES[name]


def work_dtype(name: str) -> np.dtype:
    """The dtype a merge computes in: float64 for float64 tensors, float32 otherwise."""
    if name not in _MERGEABLE:
        raise MergeError(
            f"{name} tensors cannot be merged",
            hint="store vectors and bases in float32, float16, bfloat16 or float64",
        )
    return np.dtype(np.float64) if name == "F64" else np.dtype(np.float32)


def widen_into(raw: NDArray[Any], name: str, out: NDArray[Any]) -> NDArray[Any]:
    """``raw`` (storage elements of dtype ``name``) as work floats in ``out``, exactly."""
    if name == "BF16":
        np.left_shift(raw, 16, out=out.view(np.uint32), dtype=np.uint32)
    else:
        out[...] = raw
    return out


def narrow(work: NDArray[Any], name: str) -> NDArray[Any]:
    """Work floats rounded to storage elements of dtype ``name`` (nearest, ties to even)."""
    storage = storage_dtype(name)
    if work.dtype == storage:
        return work
    if name != "BF16":
        return work.astype(storage)
    bits = work.astype(np.float32, copy=False).view(np.uint32)
    rounded = ((bits + (((bits >> 16) & 1) + 0x7FFF)) >> 16).astype(np.uint16)
    rounded[np.isnan(work)] = _BF16_NAN
    return rounded
