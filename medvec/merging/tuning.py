"""One lambda tuner for linear merges, used by the registry's workers and the simulation.

A linear merge is ``theta(lambda) = base + lambda * S`` with ``S = sum_i w_i tau_i``
(running statistics excepted: they stay the weighted mean ``sum_i w_i tau_i / sum_i w_i``
whatever lambda, as the engine merges them). So ``S`` is built once, in one pass over
the vectors (``delta_from_files`` streams them tensor by tensor), and each grid point is
then written into one model in place, tensor by tensor, from the base and ``S``, and
scored: the tuner holds the model and ``S``, never a third whole model, and merges
nothing again.

One tie rule everywhere: the best score wins, and among equal scores the smaller
lambda (the more conservative step from the base). A lambda whose weights are not
finite is skipped.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from torch import Tensor

from medvec.errors import MergeError
from medvec.merging.inputs import open_inputs
from medvec.vectors.lazy import LazyTensorReader
from medvec.vectors.names import is_running_stat

__all__ = [
    "LambdaScan",
    "TUNING_METRIC",
    "apply_lambda",
    "best_lambda",
    "delta_from_files",
    "delta_from_states",
    "scan_lambdas",
]

TUNING_METRIC = "accuracy"
LINEAR_CHUNK = 1 << 18  # elements: one row and the accumulator stay in the CPU cache


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Half-precision tensors are combined in float32; float64 stays float64 (as in the
    merge engine, ``medvec.vectors.floats.work_dtype``)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


@contextmanager
def one_intra_op_thread() -> Iterator[None]:
    """Run torch ops on one thread, restoring the setting afterwards.

    Every op here is memory-bound on a chunk of about a megabyte; fanning each out
    to an OpenMP team costs more than it gains, and on a busy CPU (a worker next
    to others) the team's waits made the merge more than 10x slower.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


BaseTensor = Callable[[str], Tensor]
"""``base(key)``: the base's tensor ``key`` (read from a file, or looked up in memory)."""


def _coefficients(key: str, weights: Tensor) -> Tensor:
    """``S``'s coefficients: the weights, or the normalised weights for running statistics."""
    return weights / weights.sum() if is_running_stat(key) else weights


def delta_from_files(
    base_path: str | Path,
    vector_paths: Sequence[str | Path],
    weights: Sequence[float],
    *,
    base_sha256: str | None = None,
    rebase: bool = False,
) -> dict[str, Tensor]:
    """``S`` from vector files in one streaming pass, one chunk of one vector at a time.

    The inputs are checked as the engine checks them (``open_inputs``) before any tensor
    is read. Memory: ``S`` (one model) and one chunk.
    """
    paths = [Path(p) for p in vector_paths]
    inputs = open_inputs(
        Path(base_path), paths, base_sha256=base_sha256, rebase=rebase, reader=LazyTensorReader
    )
    weight_tensor = torch.tensor(list(weights), dtype=torch.float64)
    if len(weights) != len(paths) or not float(weight_tensor.sum()) > 0:
        inputs.close()
        raise MergeError(
            f"{len(weights)} weights for {len(paths)} vectors, summing to "
            f"{float(weight_tensor.sum())}",
            hint="give one weight >= 0 per vector, not all zero",
        )
    delta: dict[str, Tensor] = {}
    try:
        with one_intra_op_thread():
            for info in inputs.base.header.tensors.values():
                if info.name not in inputs.floating:
                    continue
                dtype = compute_dtype(info.dtype)
                coefficients = _coefficients(info.name, weight_tensor.to(dtype)).tolist()
                acc = torch.zeros(info.numel, dtype=dtype)
                row = torch.empty(min(info.numel, LINEAR_CHUNK), dtype=info.dtype)
                for start in range(0, info.numel, LINEAR_CHUNK):
                    count = min(LINEAR_CHUNK, info.numel - start)
                    for c, reader in zip(coefficients, inputs.vectors, strict=True):
                        cast(LazyTensorReader, reader).read_into(info.name, row[:count], start)
                        acc[start : start + count].add_(row[:count].to(dtype), alpha=c)
                delta[info.name] = acc.reshape(info.shape)
    finally:
        inputs.close()
    return delta


def delta_from_states(
    vectors: Sequence[Mapping[str, Tensor]], weights: Sequence[float]
) -> dict[str, Tensor]:
    """``S`` from in-memory vectors (the simulation), accumulated in vector order."""
    if not vectors:
        raise MergeError("no vectors to merge", hint="pass at least one data vector")
    weight_tensor = torch.tensor(list(weights), dtype=torch.float64)
    delta: dict[str, Tensor] = {}
    for key, first in vectors[0].items():
        dtype = compute_dtype(first.dtype)
        coefficients = _coefficients(key, weight_tensor.to(dtype)).tolist()
        acc = torch.zeros(first.shape, dtype=dtype)
        for c, vector in zip(coefficients, vectors, strict=True):
            acc.add_(vector[key].detach().cpu().to(dtype), alpha=c)
        delta[key] = acc
    return delta


@torch.no_grad()
def apply_lambda(
    model: torch.nn.Module, base: BaseTensor, delta: Mapping[str, Tensor], lam: float
) -> bool:
    """Write ``base + lambda * S`` (``base + S`` for running statistics) into ``model`` in
    place, tensor by tensor; integer buffers get the base's values. ``False`` when a value
    is not finite (the model is then not usable)."""
    finite = True
    for key, target in model.state_dict().items():
        source = base(key)
        if key in delta:
            scale = 1.0 if is_running_stat(key) else lam
            value = source.to(delta[key].dtype) + scale * delta[key]
            low, high = torch.aminmax(value) if value.numel() else (value.new_zeros(()),) * 2
            finite = finite and math.isfinite(float(low)) and math.isfinite(float(high))
            target.copy_(value.reshape(target.shape))
        else:
            target.copy_(source.reshape(target.shape))
    return finite


@dataclass(frozen=True)
class LambdaScan:
    """Each grid point's scores (``None``: its weights were not finite) and the choice."""

    scores: dict[float, dict[str, Any] | None]
    chosen: float
    metric: str = TUNING_METRIC

    @property
    def best(self) -> dict[str, Any]:
        scores = self.scores[self.chosen]
        assert scores is not None
        return scores

    def metric_by_lambda(self) -> dict[str, float | None]:
        """``{"0.3": accuracy, ...}`` as the job records it."""
        return {
            str(lam): None if s is None else float(s[self.metric]) for lam, s in self.scores.items()
        }


def best_lambda(
    scores: Mapping[float, Mapping[str, Any] | None], metric: str = TUNING_METRIC
) -> float:
    """The lambda with the best ``metric``; ties go to the smaller lambda."""
    finite = {lam: s for lam, s in scores.items() if s is not None}
    if not finite:
        raise MergeError(
            "every lambda of the grid gave non-finite weights",
            hint="try a grid of smaller lambdas, or check the vectors' norms",
        )
    return min(finite, key=lambda lam: (-float(finite[lam][metric]), lam))


def scan_lambdas(
    model: torch.nn.Module,
    base: BaseTensor,
    delta: Mapping[str, Tensor],
    grid: Sequence[float],
    score: Callable[[torch.nn.Module], dict[str, Any]],
    *,
    metric: str = TUNING_METRIC,
) -> LambdaScan:
    """Score ``base + lambda * S`` for each lambda of ``grid`` (ascending) with ``score(model)``
    (which may recalibrate BatchNorm first) and choose one. ``model`` is left holding the
    last grid point, not the chosen one: ``apply_lambda`` it again to use it."""
    scores: dict[float, dict[str, Any] | None] = {}
    for lam in sorted(float(x) for x in grid):
        scores[lam] = score(model) if apply_lambda(model, base, delta, lam) else None
    return LambdaScan(scores, best_lambda(scores, metric), metric)
