"""Weighted mean of deltas: FedAvg's rule (McMahan et al., 2017), applied to data vectors.

``delta = sum_i w_i tau_i / sum_i w_i`` with ``w_i`` the number of training
samples behind vector i by default, or given weights (e.g. staleness-scaled).
"""

from __future__ import annotations

from typing import ClassVar

from medvec.merging import masks
from medvec.merging.base import Array, MergeStrategy, StrategyParams, TensorContext, Weighting

__all__ = ["WeightedMean"]


class WeightedMean(MergeStrategy):
    """Sample-weighted (or given-weight) mean of the vectors."""

    name = "weighted_mean"
    default_weighting: ClassVar[Weighting] = "samples"

    @property
    def is_linear(self) -> bool:
        return True

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
        coefficients = self.coefficients(weights, params)
        return masks.linear_combination(deltas, coefficients)

    def coefficients(self, weights: Array, params: StrategyParams) -> Array:
        normalised: Array = weights / weights.sum()
        return normalised
