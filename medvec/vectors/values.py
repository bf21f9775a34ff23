"""Finiteness and norms of a safetensors file's floating-point data, on numpy, in flat memory.

The registry checks every uploaded vector's values without torch: the data section
is read with plain ``readinto`` calls into one reused buffer of ``chunk_bytes``,
and reduced chunk by chunk (finite, sum of squares in float64, largest magnitude).
Memory is that buffer whatever the file's size (float32, float16 and float64 chunks are
reduced in place; bfloat16 and float8 ones are decoded into one chunk-sized array). numpy has
no bfloat16 or float8, so those are decoded from their bits: bfloat16 is the top
half of a float32, and the 256 values of each float8 format are tabulated at import.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from io import RawIOBase
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from medvec.vectors.header import SafetensorsHeader, TensorInfo, read_exact_into

__all__ = ["DEFAULT_CHUNK_BYTES", "TensorValues", "decode_floats", "scan_tensors"]

DEFAULT_CHUNK_BYTES = 1024 * 1024

Floats = NDArray[np.floating]


@dataclass(frozen=True)
class TensorValues:
    """What one pass over a tensor's values found (``non_finite``: NaN or infinite count)."""

    name: str
    numel: int
    sum_squares: float
    max_abs: float
    non_finite: int


def _float8_table(exponent_bits: int, bias: int, ieee_specials: bool) -> NDArray[np.float64]:
    """The value of each of the 256 bytes of a float8 format.

    ``ieee_specials``: an all-ones exponent is infinity (zero mantissa) or NaN, as in
    E5M2; otherwise (E4M3 "fn") only all-ones exponent and mantissa is NaN.
    """
    mantissa_bits = 7 - exponent_bits
    codes = np.arange(256)
    sign = np.where(codes & 0x80, -1.0, 1.0)
    exponent = (codes >> mantissa_bits) & ((1 << exponent_bits) - 1)
    mantissa = (codes & ((1 << mantissa_bits) - 1)) / (1 << mantissa_bits)
    normal = (1.0 + mantissa) * np.exp2(exponent - bias)
    subnormal = mantissa * np.exp2(1 - bias)
    values = sign * np.where(exponent == 0, subnormal, normal)
    top = exponent == (1 << exponent_bits) - 1
    if ieee_specials:
        values = np.where(top & (mantissa == 0), sign * np.inf, values)
        values = np.where(top & (mantissa != 0), np.nan, values)
    else:
        values = np.where((codes & 0x7F) == 0x7F, np.nan, values)
    return values.astype(np.float64)


_E4M3 = _float8_table(4, 7, ieee_specials=False)
_E5M2 = _float8_table(5, 15, ieee_specials=True)


def _bf16(raw: NDArray[np.uint16]) -> Floats:
    return (raw.astype(np.uint32) << 16).view(np.float32)


#: safetensors float dtype -> (how its bytes are read, how they become numpy floats)
_DECODERS: dict[str, tuple[type[np.generic], Callable[[NDArray[Any]], Floats]]] = {
    "F64": (np.float64, lambda raw: raw),
    "F32": (np.float32, lambda raw: raw),
    "F16": (np.float16, lambda raw: raw),
    "BF16": (np.uint16, _bf16),
    "F8_E4M3": (np.uint8, lambda raw: _E4M3[raw]),
    "F8_E5M2": (np.uint8, lambda raw: _E5M2[raw]),
}


def decode_floats(dtype_name: str, data: bytes | bytearray | memoryview) -> Floats:
    """The values of little-endian ``data`` of safetensors float dtype ``dtype_name``."""
    storage, decode = _DECODERS[dtype_name]
    return decode(np.frombuffer(data, dtype=storage))


def _reduce(values: Floats) -> tuple[float, float, int]:
    """(sum of squares in float64, largest magnitude, non-finite count) of one chunk.

    Nothing chunk-sized is allocated for the common case: ``einsum`` widens to float64
    through its small internal buffers, and a chunk is finite exactly when its max and
    min are (NaN and infinities propagate into them)."""
    high, low = values.max(), values.min()
    if not (np.isfinite(high) and np.isfinite(low)):
        return 0.0, 0.0, int(values.size - np.count_nonzero(np.isfinite(values)))
    squares = float(np.einsum("i,i->", values, values, dtype=np.float64))
    return squares, max(float(high), -float(low)), 0


def _scan_one(handle: RawIOBase, info: TensorInfo, buffer: bytearray, path: Path) -> TensorValues:
    sum_squares, max_abs, non_finite = 0.0, 0.0, 0
    step = len(buffer) - len(buffer) % info.itemsize
    for offset in range(info.begin, info.end, step):
        size = min(step, info.end - offset)
        view = memoryview(buffer)[:size]
        read_exact_into(handle, offset, view, path)
        squares, largest, bad = _reduce(decode_floats(info.dtype_name, view))
        sum_squares, max_abs, non_finite = (
            sum_squares + squares,
            max(max_abs, largest),
            non_finite + bad,
        )
    return TensorValues(info.name, info.numel, sum_squares, max_abs, non_finite)


def scan_tensors(
    path: str | Path,
    header: SafetensorsHeader,
    *,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
) -> list[TensorValues]:
    """One pass over every floating-point tensor of ``path`` (its parsed ``header``), in file
    order. Integer tensors are skipped; the caller decides what non-finite values mean."""
    path = Path(path)
    chunk_bytes = max(8, chunk_bytes - chunk_bytes % 8)
    buffer = bytearray(chunk_bytes)
    results = []
    with open(path, "rb", buffering=0) as handle:
        for info in header.tensors.values():
            if info.is_floating_point and info.numel:
                results.append(_scan_one(handle, info, buffer, path))
    return results
