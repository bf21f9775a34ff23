"""DARE (Yu et al., "Language Models are Super Mario: Absorbing Abilities from
Homologous Models as a Free Lunch", ICML 2024): drop and rescale, then task arithmetic.

Each entry of each vector is dropped with probability ``p`` and the survivors are
rescaled by ``1 / (1 - p)``, which keeps the expected vector unchanged; the
results are summed with weights and scaled by ``lambda``. The random masks are
seeded from (seed, tensor name, vector position), so a merge is reproducible.
"""

from __future__ import annotations

from pydantic import Field

from medvec.merging.base import StrategyParams
from medvec.merging.task_arithmetic import GeneralizedTaskArithmetic, Sparsify

__all__ = ["Dare", "DareParams"]


class DareParams(StrategyParams):
    drop_rate: float = Field(default=0.9, ge=0.0, lt=1.0, description="probability of a drop")
    lambda_: float = Field(default=1.0, alias="lambda", description="scale of the summed deltas")


class Dare(GeneralizedTaskArithmetic):
    """Task arithmetic over randomly dropped and rescaled vectors."""

    name = "dare"
    Params = DareParams
    sparsify: Sparsify = "random"

    def keep_prob(self, params: StrategyParams) -> float:
        assert isinstance(params, DareParams)
        return 1.0 - params.drop_rate
