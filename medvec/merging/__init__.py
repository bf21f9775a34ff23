"""Merging data vectors: strategies behind one interface, a streaming engine, weights.

``merge_files`` streams tensors from files (memory O(one model)) on numpy and never
imports torch; ``merge_state_dicts`` runs the same kernels on in-memory state dicts for
simulation, and the lambda tuner evaluates models: those names hold tensors, resolve
lazily and import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from medvec.lazy import lazy_attributes
from medvec.merging.base import MergeStrategy, StrategyParams, TensorContext
from medvec.merging.engine import DEFAULT_BUFFER_BYTES, MergeResult, merge_files
from medvec.merging.registry import STRATEGIES, get_strategy, list_strategies
from medvec.merging.similarity import mean_pairwise_cosine, pairwise_dots
from medvec.merging.spec import (
    DEFAULT_LAMBDA_GRID,
    LAMBDA_MULTIPLES,
    MergeSpec,
    WeightingRule,
    default_lambda_grid,
)
from medvec.merging.weighting import (
    check_weights,
    resolve_weights,
    sample_weights,
    staleness_weights,
    uniform_weights,
)

_LAZY: dict[str, str] = {
    "merge_state_dicts": "medvec.merging.memory",
    "LambdaScan": "medvec.merging.tuning",
    "apply_lambda": "medvec.merging.tuning",
    "best_lambda": "medvec.merging.tuning",
    "delta_from_files": "medvec.merging.tuning",
    "delta_from_states": "medvec.merging.tuning",
    "scan_lambdas": "medvec.merging.tuning",
}

if TYPE_CHECKING:
    from medvec.merging.memory import merge_state_dicts
    from medvec.merging.tuning import (
        LambdaScan,
        apply_lambda,
        best_lambda,
        delta_from_files,
        delta_from_states,
        scan_lambdas,
    )

__all__ = [
    "DEFAULT_BUFFER_BYTES",
    "DEFAULT_LAMBDA_GRID",
    "LAMBDA_MULTIPLES",
    "STRATEGIES",
    "LambdaScan",
    "MergeResult",
    "MergeSpec",
    "MergeStrategy",
    "StrategyParams",
    "TensorContext",
    "WeightingRule",
    "apply_lambda",
    "best_lambda",
    "check_weights",
    "default_lambda_grid",
    "delta_from_files",
    "delta_from_states",
    "get_strategy",
    "list_strategies",
    "mean_pairwise_cosine",
    "merge_files",
    "merge_state_dicts",
    "pairwise_dots",
    "resolve_weights",
    "scan_lambdas",
    "sample_weights",
    "staleness_weights",
    "uniform_weights",
]


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, __all__)
