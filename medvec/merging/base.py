"""The one interface every merge strategy implements.

A strategy combines, coordinate by coordinate, the deltas of N data vectors for
one tensor (or one contiguous chunk of it) into one delta. The engine adds that
delta to the base. Strategies never see files: the streaming engine
(``engine.merge_files``) and the in-memory path (``memory.merge_state_dicts``)
feed them the same stacked chunks (numpy arrays), so both give the same result.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, ValidationError

from medvec.errors import MergeError

__all__ = ["Array", "MergeStrategy", "StrategyParams", "TensorContext", "Weighting"]

Weighting = Literal["samples", "uniform"]
Array = NDArray[np.floating]
"""A numpy float array: strategies compute on numpy, so a merge needs no torch."""


class StrategyParams(BaseModel):
    """Base of every strategy's parameters: unknown names are errors, not ignored, and so
    is a value of another JSON type (``"0.5"`` or ``true`` for a number: a merge's params
    are recorded and hashed as given, so a lax ``"0.5"`` would be a second job for the
    merge of 0.5). A number field still takes an integer."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, strict=True)


@dataclass(frozen=True)
class TensorContext:
    """Where a chunk lies, for strategies whose result depends on more than its values.

    ``offset`` is the index of the chunk's first element in the flattened tensor of
    ``numel`` elements; ``stats`` holds one number per vector from ``vector_stat``
    (computed over the whole tensor) when the strategy asks for it.
    """

    key: str
    seed: int
    offset: int
    numel: int
    stats: NDArray[np.float64] | None = None


class MergeStrategy(ABC):
    """A named way to combine N deltas, with typed parameters.

    ``merge_tensor`` receives ``deltas`` of shape ``(N, count)`` (one row per
    vector, in a float compute dtype), the matching ``base`` chunk ``(count,)``
    and ``weights`` ``(N,)``, and returns the combined delta ``(count,)``. It must
    act on each coordinate independently given ``ctx`` so that the engine may
    split a tensor into chunks.
    """

    name: ClassVar[str]
    Params: ClassVar[type[StrategyParams]] = StrategyParams
    default_weighting: ClassVar[Weighting] = "uniform"
    uses_weights: ClassVar[bool] = True
    needs_stats: ClassVar[bool] = False

    def parse_params(self, params: StrategyParams | Mapping[str, object] | None) -> StrategyParams:
        """Validate user parameters into ``Params``; ``MergeError`` says what is wrong."""
        if isinstance(params, self.Params):
            return params
        raw = params.model_dump(by_alias=True) if isinstance(params, BaseModel) else params
        try:
            return self.Params.model_validate(raw or {})
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"]) or "params"
            allowed = sorted((f.alias or n) for n, f in self.Params.model_fields.items()) or [
                "(none)"
            ]
            raise MergeError(
                f"invalid parameter for {self.name}: {where}: {err['msg']}",
                hint=f"{self.name} takes: {', '.join(allowed)}",
                strategy=self.name,
            ) from exc

    @property
    def is_linear(self) -> bool:
        """Whether the merged delta is ``sum_i c_i tau_i`` (see ``coefficients``): such a merge
        can be built from running sums, tuned by scaling one delta, and undone per vector."""
        return False

    @property
    def tunes_lambda(self) -> bool:
        """Whether ``lambda`` may be chosen on a validation split by scaling one delta."""
        return self.is_linear and "lambda_" in self.Params.model_fields

    def coefficients(self, weights: Array, params: StrategyParams) -> Array | None:
        """For linear strategies, ``c`` such that the merged delta is ``sum_i c_i tau_i``.

        The engine then accumulates one vector at a time into a small buffer that
        stays in the CPU cache instead of stacking N rows. ``None``: not linear.
        """
        return None

    def vector_stat(self, delta: Array, params: StrategyParams) -> float:
        """One number per vector and tensor over the whole flattened tensor (see TIES)."""
        raise NotImplementedError(f"{self.name} uses no per-tensor statistics")

    @abstractmethod
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
        """The combined delta of one chunk."""
