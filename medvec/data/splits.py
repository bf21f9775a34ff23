"""Hospital splits for simulation: which training indices each of ``k`` hospitals holds.

Both functions are seeded (the same inputs give the same split), return ``k``
sorted int64 index arrays that are pairwise disjoint and together cover every
index, and never leave a hospital empty.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from medvec.data.arrays import as_label_vector
from medvec.errors import DatasetError

__all__ = ["split_dirichlet", "split_iid"]


def _check(n: int, k: int) -> None:
    if k < 1:
        raise DatasetError(f"cannot split into {k} hospitals; need k >= 1")
    if n < k:
        raise DatasetError(
            f"cannot give {k} hospitals at least one of {n} samples",
            hint="use fewer hospitals or more data",
        )


def split_iid(labels: Any, k: int, seed: int) -> list[np.ndarray]:
    """Shuffle, then cut into ``k`` parts whose sizes differ by at most one."""
    n = len(as_label_vector(labels))
    _check(n, k)
    order = np.random.default_rng(seed).permutation(n)
    return [np.sort(part).astype(np.int64) for part in np.array_split(order, k)]


def split_dirichlet(labels: Any, k: int, alpha: float, seed: int) -> list[np.ndarray]:
    """Label-skewed non-IID split: each class is shared out by proportions ~ Dir(alpha).

    Small ``alpha`` (e.g. 0.1) gives each hospital a few dominant classes; large
    ``alpha`` approaches an IID split. A hospital left with nothing receives one
    sample taken at random from the largest hospital.
    """
    if not alpha > 0:
        raise DatasetError(f"alpha must be > 0, not {alpha}")
    y = as_label_vector(labels).numpy()
    _check(len(y), k)
    rng = np.random.default_rng(seed)
    parts: list[list[int]] = [[] for _ in range(k)]
    for cls in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == cls))
        shares = rng.dirichlet(np.full(k, alpha))
        cuts = (np.cumsum(shares)[:-1] * len(members)).astype(np.int64)
        for hospital, chunk in enumerate(np.split(members, cuts)):
            parts[hospital].extend(chunk.tolist())
    for hospital in range(k):
        if not parts[hospital]:
            donor = max(range(k), key=lambda h: len(parts[h]))
            taken = int(rng.integers(len(parts[donor])))
            parts[hospital].append(parts[donor].pop(taken))
    return [np.sort(np.asarray(part, dtype=np.int64)) for part in parts]
