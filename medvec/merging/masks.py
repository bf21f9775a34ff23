"""Pure array kernels shared by the strategies: accumulation, trimming, dropping, sign election.

Every function here is a function of its arguments only and runs on numpy (no torch):

- ``linear_combination`` and ``axpy`` accumulate with BLAS ``?axpy``, one fused
  multiply-add per element and vector, in vector order: the same bits as torch's
  ``Tensor.add_(row, alpha=c)``, which the engine used before, and independent of
  chunking;
- the random drop is seeded per (seed, tensor, vector, block of elements), so its result
  does not depend on how the engine chunks a tensor. Each block's uniforms are the
  Mersenne Twister stream torch's CPU generator gives for that seed (torch keeps the
  seed's low 32 bits; ``torch.rand`` maps a 32-bit draw to ``(draw & 0xFFFFFF) / 2**24``),
  so masks are the ones torch drew, without torch.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

import numpy as np
from numpy.typing import NDArray

from medvec.merging import blas

__all__ = [
    "RANDOM_BLOCK",
    "axpy",
    "coordinate_median",
    "disjoint_mean",
    "elect_sign",
    "linear_combination",
    "magnitude_threshold",
    "random_keep_mask",
    "sorted_columns",
    "trimmed_mean",
]

RANDOM_BLOCK = 1 << 16
_UNIFORM_BITS = 24

Array = NDArray[np.floating]


def axpy(acc: Array, row: Array, coefficient: float) -> Array:
    """``acc += coefficient * row`` in place, one fused multiply-add per element (BLAS,
    without the GIL: ``medvec.merging.blas``). ``row`` must have ``acc``'s dtype."""
    blas.axpy(acc, row, coefficient)
    return acc


def magnitude_threshold(values: Array, density: float) -> float:
    """The smallest magnitude among the top ``density`` fraction of ``values``.

    Keeping ``|x| >= threshold`` keeps ``ceil(density * n)`` entries (more on ties).
    """
    flat = np.abs(values.reshape(-1))
    if density >= 1.0 or flat.size == 0:
        return 0.0
    keep = max(1, math.ceil(density * flat.size))
    index = flat.size - keep
    return float(np.partition(flat, index)[index])


def _block_seed(seed: int, key: str, index: int, block: int) -> int:
    digest = hashlib.blake2b(f"{seed}\x00{key}\x00{index}\x00{block}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "little") >> 1


def _block_draws(seed: int) -> NDArray[np.uint32]:
    """The 24-bit uniform numerators of one block: torch's ``rand`` stream for ``seed``."""
    twister = np.random.RandomState(seed & 0xFFFFFFFF)
    draws = twister.randint(0, 1 << 32, size=RANDOM_BLOCK, dtype=np.uint32)
    return draws & np.uint32((1 << _UNIFORM_BITS) - 1)


def random_keep_mask(
    seed: int, key: str, index: int, offset: int, count: int, keep_prob: float
) -> NDArray[np.bool_]:
    """Bernoulli(``keep_prob``) mask of elements ``[offset, offset + count)`` of a tensor.

    Values come from fixed blocks of ``RANDOM_BLOCK`` elements, each with its own
    generator seeded from (seed, tensor name, vector index, block), so any
    chunking of the tensor yields the same mask. ``u < keep`` with ``u = m / 2**24`` in
    float32 is ``m < float32(keep) * 2**24``, compared exactly in integers and float64.
    """
    limit = float(np.float32(keep_prob)) * (1 << _UNIFORM_BITS)
    out = np.empty(count, dtype=np.bool_)
    end = offset + count
    for block in range(offset // RANDOM_BLOCK, (end - 1) // RANDOM_BLOCK + 1 if count else 0):
        start = block * RANDOM_BLOCK
        draws = _block_draws(_block_seed(seed, key, index, block))
        lo, hi = max(offset, start), min(end, start + RANDOM_BLOCK)
        out[lo - offset : hi - offset] = draws[lo - start : hi - start] < limit
    return out


def linear_combination(values: Array, coefficients: NDArray[Any]) -> Array:
    """``sum_i c_i values[i]``, accumulated in vector order by fused multiply-adds.

    The streaming engine accumulates in the same order chunk by chunk, so both
    give the same bits whatever the chunking.
    """
    out = np.zeros(values.shape[1:], dtype=values.dtype)
    for row, coefficient in zip(values, coefficients.tolist(), strict=True):
        axpy(out, row, coefficient)
    return out


def elect_sign(values: Array, weights: Array) -> Array:
    """TIES sign election: the sign of the weighted sum over vectors (axis 0), +1 on ties."""
    total = (values * weights[:, None]).sum(axis=0)
    return np.where(total >= 0, 1.0, -1.0).astype(values.dtype)


def disjoint_mean(values: Array, weights: Array, sign: Array) -> Array:
    """Weighted mean over the vectors whose non-zero value agrees with ``sign``; 0 if none."""
    agree = (np.sign(values) == sign[None, :]) & (values != 0)
    w = weights[:, None] * agree
    total = (values * w).sum(axis=0)
    mass = w.sum(axis=0)
    return np.where(mass > 0, total / np.where(mass > 0, mass, 1.0), 0.0).astype(values.dtype)


def sorted_columns(values: Array) -> Array:
    """``values`` ``(N, count)`` sorted along N, returned as ``(count, N)``.

    numpy's vectorised sort of short contiguous rows is several times faster on
    the CPU than a sort along the long axis for N <= ~100.
    """
    rows = np.ascontiguousarray(values.T)
    rows.sort(axis=1)
    return rows


def coordinate_median(values: Array) -> Array:
    """Median over axis 0 with numpy's semantics: even N gives the mean of the middle two.

    A full sort of the short rows: numpy's vectorised sort beats ``np.partition`` there
    (5.7 ms against 6.5 ms for one middle value, 43 ms for two, on 65,536 x 50 floats).
    """
    n = values.shape[0]
    ordered = sorted_columns(values)
    if n % 2:
        return np.ascontiguousarray(ordered[:, n // 2])
    return (ordered[:, n // 2 - 1] + ordered[:, n // 2]) / values.dtype.type(2)


SHORT_ROWS = 16
"""Kept values up to which the trimmed mean sums column by column (a vectorised pass per
kept column); above, one reduction along the rows costs less."""


def trimmed_mean(values: Array, trim: int) -> Array:
    """Mean over axis 0 after dropping the ``trim`` smallest and ``trim`` largest values.

    With few kept values they are summed in ascending order one column at a time (a
    reduction over rows of 8 costs more per row than the sort: 6.0 against 2.3 ms for
    327,680 x 10 floats); with many, along the rows (1.6 against 6.4 ms for 65,536 x 50).
    """
    n = values.shape[0]
    if trim == 0:
        mean: Array = values.mean(axis=0)
        return mean
    ordered = sorted_columns(values)
    kept = n - 2 * trim
    if kept > SHORT_ROWS:
        trimmed: Array = ordered[:, trim : n - trim].sum(axis=1) / values.dtype.type(kept)
        return trimmed
    total = ordered[:, trim].copy()
    for column in range(trim + 1, n - trim):
        total += ordered[:, column]
    return total / values.dtype.type(kept)
