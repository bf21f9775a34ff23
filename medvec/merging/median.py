"""Coordinate-wise median (Yin et al., "Byzantine-Robust Distributed Learning:
Towards Optimal Statistical Rates", ICML 2018).

Robust to a minority of arbitrary vectors. With an even number of vectors the
median is the mean of the two middle values, as in ``numpy.median`` (not
``torch.median``, which returns the lower one). Weights are not used.
"""

from __future__ import annotations

from typing import ClassVar

from medvec.merging import masks
from medvec.merging.base import Array, MergeStrategy, StrategyParams, TensorContext

__all__ = ["Median"]


class Median(MergeStrategy):
    """Median of the N deltas at every coordinate."""

    name = "median"
    uses_weights: ClassVar[bool] = False

    def merge_tensor(
        self,
        key: str,
        base: Array,
        deltas: Array,
        weights: Array,
        *,
        params: StrategyParams,
        ctx: TensorContext,
    ) -> Array:
        return masks.coordinate_median(deltas)
