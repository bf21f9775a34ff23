"""``MergeSpec``: everything a merge means besides its inputs, typed and checked in one place.

The registry's request handling, its workers, the simulation and ``medvec merge`` all
build one and ask it (and the strategy it names) what a merge needs: each vector's
weight (samples or 1, times staleness), whether the merge is linear, whether and on
which grid lambda is tuned, the seed, and whether vectors of an older generation are
applied to the newer base (``rebase``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from medvec.errors import MergeError
from medvec.merging.base import MergeStrategy
from medvec.merging.registry import get_strategy, list_strategies
from medvec.merging.weighting import staleness_weights

__all__ = [
    "DEFAULT_LAMBDA_GRID",
    "LAMBDA_MULTIPLES",
    "TUNE",
    "MergeSpec",
    "WeightingRule",
    "default_lambda_grid",
]

WeightingRule = Literal["samples", "uniform", "none"]

#: the ``lambda`` value that asks for tuning on a validation split
TUNE = "tune"
#: lambdas tried when no grid is named, together with ``LAMBDA_MULTIPLES / N`` for N vectors
DEFAULT_LAMBDA_GRID = (0.1, 0.2, 0.3, 0.5, 0.7, 1.0)
#: ``m / N`` reaches from half the plain mean (m = 0.5) to eight times it: after BatchNorm
#: recalibration the best task-arithmetic scale is often well above the mean's ``1 / N``
LAMBDA_MULTIPLES = (0.5, 1.0, 2.0, 4.0, 8.0)


def default_lambda_grid(num_vectors: int) -> list[float]:
    """``DEFAULT_LAMBDA_GRID`` and ``LAMBDA_MULTIPLES / N``, sorted, without repeats."""
    points = {*DEFAULT_LAMBDA_GRID, *(m / max(1, num_vectors) for m in LAMBDA_MULTIPLES)}
    return sorted({round(float(x), 9) for x in points})


class MergeSpec(BaseModel):
    """What a merge is, apart from which vectors it takes.

    ``params`` are the strategy's own (validated by it; ``lambda`` is left out while it
    is being tuned). ``weighting`` defaults to the strategy's rule: ``samples`` (weighted
    mean), ``uniform`` (task arithmetic, TIES, DARE) or ``none`` (median, trimmed mean,
    which take no weights). ``lambda_grid`` set means lambda is chosen on a validation
    split among its points. ``rebase``: a hospital without a vector of this base
    contributes its newest vector of the nearest older generation, applied to this base
    and weighted by ``(1 + staleness) ** -staleness_power``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    strategy: str = "weighted_mean"
    params: dict[str, Any] = Field(default_factory=dict)
    weighting: WeightingRule | None = None
    staleness_power: float = Field(default=0.5, ge=0)
    rebase: bool = False
    lambda_grid: tuple[float, ...] | None = None
    seed: int = 0

    @field_validator("strategy")
    @classmethod
    def _known(cls, name: str) -> str:
        if name not in list_strategies():
            raise ValueError(f"unknown merge strategy {name!r}: use one of {list_strategies()}")
        return name

    @field_validator("lambda_grid")
    @classmethod
    def _positive(cls, grid: tuple[float, ...] | None) -> tuple[float, ...] | None:
        if grid is None:
            return None
        if not grid or any(not x > 0 for x in grid):
            raise ValueError(f"lambda_grid must hold positive numbers, got {list(grid)}")
        return tuple(sorted({float(x) for x in grid}))

    @model_validator(mode="after")
    def _consistent(self) -> MergeSpec:
        strategy = self.strategy_impl
        own = {k: v for k, v in self.params.items() if not (self.tunes and k == "lambda")}
        strategy.parse_params(own)  # MergeError naming the parameters it takes
        if self.tunes and not strategy.tunes_lambda:
            raise ValueError(f"{self.strategy} has no lambda that can be tuned")
        default: WeightingRule = strategy.default_weighting if strategy.uses_weights else "none"
        if self.weighting is None:
            object.__setattr__(self, "weighting", default)
        elif (self.weighting == "none") != (default == "none"):
            raise ValueError(f"{self.strategy} cannot use weighting {self.weighting!r}")
        return self

    @classmethod
    def from_request(
        cls,
        strategy: str,
        params: Mapping[str, Any],
        *,
        num_vectors: int,
        seed: int = 0,
        staleness_power: float = 0.5,
        rebase: bool = False,
    ) -> MergeSpec:
        """A spec from a request's loose ``params``: ``"lambda": "tune"`` or a ``lambda_grid``
        asks for tuning (on the default grid for ``num_vectors`` vectors when none is named).

        ``MergeError`` says what is wrong.
        """
        own = dict(params)
        grid = own.pop("lambda_grid", None)
        tune = own.get("lambda") == TUNE or grid is not None
        if tune:
            own.pop("lambda", None)
            if grid is not None and (
                not isinstance(grid, list | tuple)
                or not all(isinstance(x, int | float) and not isinstance(x, bool) for x in grid)
            ):
                raise MergeError(
                    "lambda_grid must hold positive numbers", hint="e.g. [0.1, 0.3, 1.0]"
                )
            grid = tuple(grid) if grid is not None else tuple(default_lambda_grid(num_vectors))
        return cls.checked(
            strategy=strategy,
            params=own,
            seed=seed,
            staleness_power=staleness_power,
            rebase=rebase,
            lambda_grid=grid if tune else None,
        )

    @classmethod
    def checked(cls, **fields: Any) -> MergeSpec:
        """``MergeSpec(**fields)`` with a ``MergeError`` (what is wrong, how to fix it)."""
        from pydantic import ValidationError

        try:
            return cls(**fields)
        except ValidationError as exc:
            err = exc.errors()[0]
            cause = err.get("ctx", {}).get("error")
            if isinstance(cause, MergeError):
                raise cause from exc
            where = ".".join(str(p) for p in err["loc"])
            message = str(err["msg"]).removeprefix("Value error, ")
            raise MergeError(
                f"{where + ': ' if where else ''}{message}",
                hint="see the strategies and their parameters in docs/merging.md",
                strategy=fields.get("strategy"),
            ) from exc

    @property
    def strategy_impl(self) -> MergeStrategy:
        return get_strategy(self.strategy)

    @property
    def tunes(self) -> bool:
        """Whether lambda is chosen on a validation split (``lambda_grid`` is set)."""
        return self.lambda_grid is not None

    @property
    def is_linear(self) -> bool:
        return self.strategy_impl.is_linear

    def weight(self, num_samples: int, staleness: int = 0) -> float:
        """One vector's weight: samples or 1 (the weighting rule), times the staleness
        factor ``(1 + s) ** -staleness_power``; 1 where the strategy takes no weights
        (median and trimmed mean cannot down-weight a stale vector)."""
        if self.weighting == "none":
            return 1.0
        base = float(num_samples) if self.weighting == "samples" else 1.0
        return base * staleness_weights([staleness], self.staleness_power)[0]

    def engine_weights(self, weights: list[float]) -> list[float] | None:
        """What the engines take as ``weights``: ``None`` for strategies that take none."""
        return None if self.weighting == "none" else list(weights)

    def with_lambda(self, lam: float) -> MergeSpec:
        """The same spec with ``lambda`` fixed (after tuning chose it)."""
        return self.model_copy(update={"params": {**self.params, "lambda": float(lam)}})

    def record(self) -> dict[str, Any]:
        """The strategy's parameters plus what steers the job, as versions record them."""
        out: dict[str, Any] = {**self.params, "seed": self.seed}
        if self.lambda_grid is not None:
            out["lambda_grid"] = list(self.lambda_grid)
        return out
