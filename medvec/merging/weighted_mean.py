"""Weighted mean of deltas: FedAvg's rule (McMahan et al., 2017), applied to data vectors.

``delta = sum_i w_i tau_i / sum_i w_i`` with ``w_i`` the number of training
samples behind vector i by default, or given weights (e.g. staleness-scaled).
"""

from __future__ import annotations

from typing import ClassVar

from torch import Tensor

from medvec.merging import masks
from medvec.merging.base import MergeStrategy, StrategyParams, TensorContext, Weighting

__all__ = ["WeightedMean"]


class WeightedMean(MergeStrategy):
    """Sample-weighted (or given-weight) mean of the vectors."""

    name = "weighted_mean"
    default_weighting: ClassVar[Weighting] = "samples"

    def merge_tensor(
        self,
        key: str,
        base: Tensor,
        deltas: Tensor,
        weights: Tensor,
        *,
        params: StrategyParams,
        ctx: TensorContext,
    ) -> Tensor:
        coefficients = self.coefficients(weights, params)
        return masks.linear_combination(deltas, coefficients)

    def coefficients(self, weights: Tensor, params: StrategyParams) -> Tensor:
        return weights / weights.sum()
