"""TIES-merging (Yadav et al., "TIES-Merging: Resolving Interference When Merging
Models", NeurIPS 2023): trim, elect sign, disjoint merge, then scale.

1. Trim: in every tensor of every vector keep the ``density`` fraction of entries
   with the largest magnitude, zero the rest.
2. Elect: at each coordinate the sign of the (weighted) sum of trimmed values.
3. Disjoint mean: average only the non-zero values that agree with that sign.
4. Scale by ``lambda``.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from medvec.merging import masks
from medvec.merging.base import Array, StrategyParams
from medvec.merging.task_arithmetic import GeneralizedTaskArithmetic, Sparsify

__all__ = ["Ties", "TiesParams"]


class TiesParams(StrategyParams):
    density: float = Field(default=0.2, gt=0.0, le=1.0, description="fraction of entries kept")
    lambda_: float = Field(default=1.0, alias="lambda", description="scale of the merged delta")


class Ties(GeneralizedTaskArithmetic):
    """Task arithmetic with magnitude trimming, sign consensus and the disjoint mean."""

    name = "ties"
    Params = TiesParams
    needs_stats: ClassVar[bool] = True
    sparsify: Sparsify = "magnitude"
    consensus = True
    normalize = True

    def vector_stat(self, delta: Array, params: StrategyParams) -> float:
        assert isinstance(params, TiesParams)
        return masks.magnitude_threshold(delta, params.density)
