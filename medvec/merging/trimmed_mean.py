"""Coordinate-wise trimmed mean (Yin et al., ICML 2018; Flower's ``FedTrimmedAvg``).

At every coordinate drop the ``floor(trim_fraction * N)`` smallest and as many
largest values, and average the rest. Weights are not used.
"""

from __future__ import annotations

import math
from typing import ClassVar

from pydantic import Field

from medvec.errors import MergeError
from medvec.merging import masks
from medvec.merging.base import Array, MergeStrategy, StrategyParams, TensorContext

__all__ = ["TrimmedMean", "TrimmedMeanParams"]


class TrimmedMeanParams(StrategyParams):
    trim_fraction: float = Field(
        default=0.1, ge=0.0, lt=0.5, description="fraction cut at each end (beta)"
    )


class TrimmedMean(MergeStrategy):
    """Mean of the deltas left after trimming both tails at every coordinate."""

    name = "trimmed_mean"
    Params = TrimmedMeanParams
    uses_weights: ClassVar[bool] = False

    @staticmethod
    def trim_count(n: int, params: TrimmedMeanParams) -> int:
        trim = math.floor(params.trim_fraction * n)
        if n - 2 * trim < 1:
            raise MergeError(
                f"trim_fraction {params.trim_fraction} leaves no vector of {n}",
                hint="lower --trim-fraction or merge more vectors",
            )
        return trim

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
        assert isinstance(params, TrimmedMeanParams)
        return masks.trimmed_mean(deltas, self.trim_count(deltas.shape[0], params))
