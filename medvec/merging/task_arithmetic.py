"""Task arithmetic and its generalisation, the core that TIES and DARE parameterise.

Task arithmetic (Ilharco et al., "Editing Models with Task Arithmetic", ICLR 2023):
``delta = lambda * sum_i w_i tau_i`` (weights default to 1). The generalised form
(after mergekit's ``generalized_task_arithmetic``) first sparsifies each
``tau_i`` (by magnitude for TIES, at random for DARE), optionally keeps only the
entries that agree with an elected sign, and optionally divides by the weight
mass that remains at each coordinate (the disjoint mean).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from medvec.merging import masks
from medvec.merging.base import Array, MergeStrategy, StrategyParams, TensorContext

__all__ = ["GeneralizedTaskArithmetic", "TaskArithmetic", "TaskArithmeticParams"]

Sparsify = Literal["none", "magnitude", "random"]


class TaskArithmeticParams(StrategyParams):
    lambda_: float = Field(default=1.0, alias="lambda", description="scale of the summed deltas")


class GeneralizedTaskArithmetic(MergeStrategy):
    """``lambda * combine(sparsify(tau_i))``; subclasses fix the switches."""

    sparsify: Sparsify = "none"
    consensus: bool = False
    normalize: bool = False

    def keep_prob(self, params: StrategyParams) -> float:
        return 1.0

    def _sparsified(self, deltas: Array, params: StrategyParams, ctx: TensorContext) -> Array:
        if self.sparsify == "magnitude":
            assert ctx.stats is not None, "magnitude trimming needs per-vector thresholds"
            return deltas * (np.abs(deltas) >= ctx.stats[:, None].astype(deltas.dtype))
        if self.sparsify == "random":
            keep = self.keep_prob(params)
            rows = [
                masks.random_keep_mask(ctx.seed, ctx.key, i, ctx.offset, deltas.shape[1], keep)
                for i in range(deltas.shape[0])
            ]
            return deltas * np.stack(rows).astype(deltas.dtype) / keep
        return deltas

    @property
    def is_linear(self) -> bool:
        return self.sparsify == "none" and not self.consensus and not self.normalize

    def coefficients(self, weights: Array, params: StrategyParams) -> Array | None:
        if not self.is_linear:
            return None
        return float(getattr(params, "lambda_", 1.0)) * weights

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
        linear = self.coefficients(weights, params)
        if linear is not None:
            return masks.linear_combination(deltas, linear)
        values = self._sparsified(deltas, params, ctx)
        scale = float(getattr(params, "lambda_", 1.0))
        if self.consensus:
            sign = masks.elect_sign(values, weights)
            if self.normalize:
                return scale * masks.disjoint_mean(values, weights, sign)
            agree = (np.sign(values) == sign[None, :]).astype(values.dtype)
            return scale * masks.linear_combination(values * agree, weights)
        return scale * masks.linear_combination(values, weights)


class TaskArithmetic(GeneralizedTaskArithmetic):
    """``lambda * sum_i w_i tau_i`` (Ilharco et al., 2023); weights default to 1."""

    name = "task_arithmetic"
    Params = TaskArithmeticParams
