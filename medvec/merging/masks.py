"""Pure tensor kernels shared by the strategies: trimming, dropping, sign election.

Every function here is a function of its arguments only; the random drop is
seeded per (seed, tensor, vector, block of elements) so that its result does
not depend on how the engine chunks a tensor.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "RANDOM_BLOCK",
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


def magnitude_threshold(values: Tensor, density: float) -> float:
    """The smallest magnitude among the top ``density`` fraction of ``values``.

    Keeping ``|x| >= threshold`` keeps ``ceil(density * n)`` entries (more on ties).
    """
    flat = values.reshape(-1).abs()
    if density >= 1.0 or flat.numel() == 0:
        return 0.0
    keep = max(1, math.ceil(density * flat.numel()))
    return float(torch.kthvalue(flat, flat.numel() - keep + 1).values)


def _block_seed(seed: int, key: str, index: int, block: int) -> int:
    digest = hashlib.blake2b(f"{seed}\x00{key}\x00{index}\x00{block}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "little") >> 1


def random_keep_mask(
    seed: int, key: str, index: int, offset: int, count: int, keep_prob: float
) -> Tensor:
    """Bernoulli(``keep_prob``) mask of elements ``[offset, offset + count)`` of a tensor.

    Values come from fixed blocks of ``RANDOM_BLOCK`` elements, each with its own
    generator seeded from (seed, tensor name, vector index, block), so any
    chunking of the tensor yields the same mask.
    """
    out = torch.empty(count, dtype=torch.bool)
    end = offset + count
    for block in range(offset // RANDOM_BLOCK, (end - 1) // RANDOM_BLOCK + 1 if count else 0):
        start = block * RANDOM_BLOCK
        gen = torch.Generator().manual_seed(_block_seed(seed, key, index, block))
        uniform = torch.rand(RANDOM_BLOCK, generator=gen)
        lo, hi = max(offset, start), min(end, start + RANDOM_BLOCK)
        out[lo - offset : hi - offset] = uniform[lo - start : hi - start] < keep_prob
    return out


def linear_combination(values: Tensor, coefficients: Tensor) -> Tensor:
    """``sum_i c_i values[i]``, accumulated in vector order.

    The streaming engine accumulates in the same order chunk by chunk, so both
    give the same bits whatever the chunking.
    """
    out = torch.zeros(values.shape[1:], dtype=values.dtype)
    for row, coefficient in zip(values, coefficients.tolist(), strict=True):
        out.add_(row, alpha=coefficient)
    return out


def elect_sign(values: Tensor, weights: Tensor) -> Tensor:
    """TIES sign election: the sign of the weighted sum over vectors (dim 0), +1 on ties."""
    total = (values * weights[:, None]).sum(dim=0)
    return torch.where(total >= 0, 1.0, -1.0).to(values.dtype)


def disjoint_mean(values: Tensor, weights: Tensor, sign: Tensor) -> Tensor:
    """Weighted mean over the vectors whose non-zero value agrees with ``sign``; 0 if none."""
    agree = (torch.sign(values) == sign[None, :]) & (values != 0)
    w = weights[:, None] * agree
    total = (values * w).sum(dim=0)
    mass = w.sum(dim=0)
    return torch.where(mass > 0, total / torch.where(mass > 0, mass, 1.0), 0.0)


def sorted_columns(values: Tensor) -> Tensor:
    """``values`` ``(N, count)`` sorted along N, returned as ``(count, N)``.

    numpy's vectorised sort of short contiguous rows is several times faster on
    the CPU than ``torch.sort`` or ``torch.kthvalue`` along dim 0 for N <= ~100.
    """
    rows = np.ascontiguousarray(values.detach().cpu().numpy().T)
    rows.sort(axis=1)
    return torch.from_numpy(rows)


def coordinate_median(values: Tensor) -> Tensor:
    """Median over dim 0 with numpy's semantics: even N gives the mean of the middle two."""
    n = values.shape[0]
    ordered = sorted_columns(values)
    if n % 2:
        return ordered[:, n // 2].contiguous()
    return (ordered[:, n // 2 - 1] + ordered[:, n // 2]) / 2


def trimmed_mean(values: Tensor, trim: int) -> Tensor:
    """Mean over dim 0 after dropping the ``trim`` smallest and ``trim`` largest values."""
    n = values.shape[0]
    if trim == 0:
        return values.mean(dim=0)
    return sorted_columns(values)[:, trim : n - trim].mean(dim=1)
