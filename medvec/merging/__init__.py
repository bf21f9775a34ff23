"""Merging data vectors: strategies behind one interface, a streaming engine, weights.

``merge_files`` streams tensors from files (memory O(one model)); ``merge_state_dicts``
runs the same kernels in memory for simulation and tuning.
"""

from medvec.merging.base import MergeStrategy, StrategyParams, TensorContext
from medvec.merging.engine import DEFAULT_BUFFER_BYTES, MergeResult, merge_files
from medvec.merging.memory import merge_state_dicts
from medvec.merging.registry import STRATEGIES, get_strategy, list_strategies
from medvec.merging.similarity import mean_pairwise_cosine, pairwise_dots
from medvec.merging.weighting import (
    check_weights,
    resolve_weights,
    sample_weights,
    staleness_weights,
    uniform_weights,
)

__all__ = [
    "DEFAULT_BUFFER_BYTES",
    "STRATEGIES",
    "MergeResult",
    "MergeStrategy",
    "StrategyParams",
    "TensorContext",
    "check_weights",
    "get_strategy",
    "list_strategies",
    "mean_pairwise_cosine",
    "merge_files",
    "merge_state_dicts",
    "pairwise_dots",
    "resolve_weights",
    "sample_weights",
    "staleness_weights",
    "uniform_weights",
]
