"""The explicit registry of merge strategies: one line per strategy, no duplicates."""

from __future__ import annotations

from collections.abc import Iterable

from medvec.errors import MergeError
from medvec.merging.base import MergeStrategy
from medvec.merging.dare import Dare
from medvec.merging.median import Median
from medvec.merging.task_arithmetic import TaskArithmetic
from medvec.merging.ties import Ties
from medvec.merging.trimmed_mean import TrimmedMean
from medvec.merging.weighted_mean import WeightedMean

__all__ = ["STRATEGIES", "build_registry", "get_strategy", "list_strategies"]


def build_registry(strategies: Iterable[MergeStrategy]) -> dict[str, MergeStrategy]:
    """Strategies by name; a second strategy under a taken name is an error."""
    registry: dict[str, MergeStrategy] = {}
    for strategy in strategies:
        if strategy.name in registry:
            raise MergeError(
                f"merge strategy {strategy.name!r} is registered twice",
                hint="give every strategy its own name",
            )
        registry[strategy.name] = strategy
    return registry


STRATEGIES: dict[str, MergeStrategy] = build_registry(
    [
        WeightedMean(),
        TaskArithmetic(),
        Ties(),
        Dare(),
        Median(),
        TrimmedMean(),
    ]
)


def list_strategies() -> list[str]:
    """Names of the available strategies, in registry order."""
    return list(STRATEGIES)


def get_strategy(name: str | MergeStrategy) -> MergeStrategy:
    """The strategy called ``name``; ``MergeError`` listing the known names otherwise."""
    if isinstance(name, MergeStrategy):
        return name
    try:
        return STRATEGIES[name]
    except KeyError:
        raise MergeError(
            f"unknown merge strategy {name!r}",
            hint=f"use one of: {', '.join(STRATEGIES)}",
            strategy=name,
        ) from None
