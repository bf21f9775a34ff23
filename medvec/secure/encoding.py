"""Fixed-point encoding of float tensors into the ring Z/2^64 and additive splitting.

A value ``x`` is encoded as ``round(x * 2**FRAC_BITS) mod 2**64`` (two's complement), so
sums of encodings are encodings of sums as long as the true sum stays inside
``(-2**63, 2**63) / 2**FRAC_BITS``. numpy's ``uint64`` arithmetic wraps modulo ``2**64``,
which is exactly the ring. The overflow analysis (docs/secure-aggregation.md): a vector
of L2 norm at most ``B`` has every coordinate in ``[-B, B]``, so a plain sum of vectors
each pre-scaled by its public weight ``w_i`` stays exact while
``sum(w_i) * B * 2**FRAC_BITS < 2**63`` (:func:`max_total_weight`).
"""

from __future__ import annotations

import math
import os

import numpy as np
from numpy.typing import NDArray

from medvec.errors import SecureAggregationError

__all__ = [
    "FRAC_BITS",
    "MODULUS_BITS",
    "SCALE",
    "decode",
    "encode",
    "max_total_weight",
    "random_share",
    "split",
]

FRAC_BITS = 24
"""Fractional bits: the encoding's resolution is ``2**-24`` (about 6e-8)."""
MODULUS_BITS = 64
"""Shares live in Z/2^64."""
SCALE = float(1 << FRAC_BITS)
SIGNED_LIMIT = float(1 << (MODULUS_BITS - 1))

Ring = NDArray[np.uint64]


def encode(values: NDArray[np.floating], *, frac_bits: int = FRAC_BITS) -> Ring:
    """``round(values * 2**frac_bits)`` as elements of Z/2^64 (negative values wrap)."""
    scaled = np.rint(np.asarray(values, dtype=np.float64) * float(1 << frac_bits))
    if not np.all(np.isfinite(scaled)) or np.any(np.abs(scaled) >= SIGNED_LIMIT):
        raise SecureAggregationError(
            "a value is not finite or too large for the fixed-point encoding",
            hint="clip the vector to the registry's norm bound before encoding it",
        )
    return scaled.astype(np.int64).view(np.uint64)


def decode(ring: Ring, *, frac_bits: int = FRAC_BITS) -> NDArray[np.float64]:
    """The signed real values of ring elements (the inverse of :func:`encode`)."""
    return np.asarray(ring, dtype=np.uint64).view(np.int64).astype(np.float64) / float(
        1 << frac_bits
    )


def random_share(shape: tuple[int, ...]) -> Ring:
    """Uniform elements of Z/2^64 from the operating system's CSPRNG (``os.urandom``).

    Every share B must be unpredictable to the registry: a non-cryptographic generator
    (PCG64, Mersenne twister) can be reconstructed from enough of its outputs.
    """
    count = math.prod(shape)
    return np.frombuffer(os.urandom(8 * count), dtype=np.uint64).reshape(shape).copy()


def split(encoded: Ring) -> tuple[Ring, Ring]:
    """``(A, B)`` with B uniform and ``A + B = encoded`` in Z/2^64; each alone is uniform."""
    share_b = random_share(tuple(encoded.shape))
    share_a = encoded - share_b  # uint64 arithmetic wraps: subtraction mod 2**64
    return share_a, share_b


def max_total_weight(max_norm: float, *, frac_bits: int = FRAC_BITS) -> int:
    """The largest ``sum(w_i)`` for which a sum of vectors of norm at most ``max_norm``,
    each scaled by its weight ``w_i``, cannot wrap around the ring."""
    if not max_norm > 0:
        raise SecureAggregationError(f"the norm bound must be > 0, not {max_norm}")
    return int(SIGNED_LIMIT / (max_norm * float(1 << frac_bits))) - 1
