"""Distributed differential privacy for secure sums.

With secure aggregation only the sum of at least K vectors is released, so the noise a
central Gaussian mechanism needs (std ``sigma * C`` for vectors clipped to L2 norm
``C``) can be split among the hospitals: each adds ``N(0, (sigma * C)^2 / K)``, and the
sum over K hospitals carries variance ``(sigma * C)^2``. The guarantee is the central
one, ``gaussian_epsilon(sigma, delta)``, and it holds only for sums in which at least K
honest hospitals added their noise; the share holder's minimum set size K enforces the
count, not the honesty. The record written into the vector's metadata says so. The
noisy vector's shares have public weight 1: pre-scaling by unequal weights would scale
each hospital's part of the noise apart from the others', and the guarantee with it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from torch import Tensor

from medvec.errors import PrivacyError
from medvec.privacy import add_gaussian_noise, clip_by_l2, gaussian_epsilon

__all__ = ["distributed_gaussian"]


def distributed_gaussian(
    tensors: Mapping[str, Tensor],
    *,
    noise_multiplier: float,
    clip: float,
    k: int,
    delta: float,
) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Clip to ``clip`` and add this hospital's part of the noise; return the record too."""
    if k < 1:
        raise PrivacyError(f"K must be at least 1, not {k}")
    std = noise_multiplier * clip / math.sqrt(k)
    clipped = clip_by_l2(dict(tensors), clip)
    noisy = dict(add_gaussian_noise(clipped, std))  # from the OS CSPRNG, never seeded
    record: dict[str, Any] = {
        "mechanism": "distributed_gaussian",
        "dp_clip": clip,
        "dp_noise": noise_multiplier,
        "secure_k": k,
        "noise_std": std,
        "epsilon": gaussian_epsilon(noise_multiplier, delta),
        "delta": delta,
        "accountant": "analytic_gaussian",
        "guarantee": (
            f"(epsilon, delta)-DP for this hospital's vector in any released sum over at "
            f"least {k} honest hospitals that each added their noise; with fewer honest "
            "hospitals in a sum the noise, and so the guarantee, is weaker"
        ),
    }
    return noisy, record
