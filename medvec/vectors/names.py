"""What a tensor's name says about it, without torch (the merge engine sees files, not modules)."""

from __future__ import annotations

__all__ = ["RUNNING_STAT_SUFFIXES", "is_running_stat"]

RUNNING_STAT_SUFFIXES = ("running_mean", "running_var")
"""Names of normalisation layers' running statistics (BatchNorm, InstanceNorm with
``track_running_stats``): buffers that describe activations, not learned weights."""


def is_running_stat(key: str) -> bool:
    """Whether a state-dict key is a normalisation layer's running mean or variance.

    Decided by name so that the streaming engine, which sees files and not modules,
    applies the same rule as code holding the model. Merges combine these tensors as
    the plain weighted mean of the deltas whatever the strategy, and the mergeability
    statistics leave them out.
    """
    return key.rsplit(".", 1)[-1] in RUNNING_STAT_SUFFIXES
