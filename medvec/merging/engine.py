"""The streaming merge engine: O(one model) memory whatever the number of vectors.

For each tensor of the base, in file order, the engine reads the same range of
elements from every vector into one reused ``(N, chunk)`` buffer by plain file
reads (``LazyTensorReader.read_into``), combines it with the strategy, adds the
base and appends the result to the output file. The chunk length shrinks as N
grows so that the buffer stays within ``buffer_bytes``: memory is flat in N.
Integer buffers (``num_batches_tracked``) are copied from the base. The output
is a model file written under a temporary name, fsynced and renamed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel
from torch import Tensor

from medvec.merging.base import MergeStrategy, StrategyParams, TensorContext
from medvec.merging.combine import (
    add_to_base,
    combine_chunk,
    compute_dtype,
    linear_coefficients,
    vector_stats,
)
from medvec.merging.inputs import MergeInputs, open_inputs
from medvec.merging.masks import RANDOM_BLOCK
from medvec.merging.registry import get_strategy
from medvec.merging.weighting import resolve_weights
from medvec.models.files import FORMAT_KEY, MODEL_FORMAT, PROVENANCE_KEY, SPEC_KEY
from medvec.vectors.header import TensorInfo
from medvec.vectors.writer import SafetensorsWriter

__all__ = ["DEFAULT_BUFFER_BYTES", "MergeResult", "Progress", "merge_files"]

DEFAULT_BUFFER_BYTES = 64 * 1024 * 1024
COPY_CHUNK_BYTES = 8 * 1024 * 1024
LINEAR_CHUNK = 1 << 18  # elements: one row and the accumulator stay in the CPU cache

Progress = Callable[[int, int, str], None]
"""``progress(done, total, tensor_name)`` after each tensor is written."""


class MergeResult(BaseModel):
    """What a merge wrote and from what; ``lineage`` is also in the file's header."""

    path: Path
    sha256: str
    strategy: str
    params: dict[str, Any]
    weights: list[float] | None
    seed: int
    num_vectors: int
    num_tensors: int
    seconds: float
    lineage: dict[str, Any]


def _chunk_elements(n: int, itemsize: int, numel: int, buffer_bytes: int) -> int:
    """Elements per chunk: a multiple of the random block that keeps N rows within budget."""
    fit = buffer_bytes // max(1, n * itemsize)
    return max(RANDOM_BLOCK, fit // RANDOM_BLOCK * RANDOM_BLOCK) if fit < numel else numel


class _Buffers:
    """One reused ``(N, chunk)`` stack and one base chunk per dtype."""

    def __init__(self) -> None:
        self._stacks: dict[torch.dtype, Tensor] = {}
        self._bases: dict[torch.dtype, Tensor] = {}
        self._scratch: dict[torch.dtype, Tensor] = {}
        self._acc: dict[torch.dtype, Tensor] = {}

    def get(self, dtype: torch.dtype, n: int, count: int) -> tuple[Tensor, Tensor]:
        stack = self._stacks.get(dtype)
        if stack is None or stack.numel() < n * count:
            stack = self._stacks[dtype] = torch.empty(n * count, dtype=dtype)
        base = self._bases.get(dtype)
        if base is None or base.numel() < count:
            base = self._bases[dtype] = torch.empty(count, dtype=dtype)
        return stack[: n * count].view(n, count), base[:count]

    def accumulator(self, dtype: torch.dtype, count: int) -> Tensor:
        """A zeroed buffer for linear strategies' running sum."""
        buffer = self._acc.get(dtype)
        if buffer is None or buffer.numel() < count:
            buffer = self._acc[dtype] = torch.empty(count, dtype=dtype)
        return buffer[:count].zero_()

    def scratch(self, dtype: torch.dtype, count: int) -> Tensor:
        """A whole-tensor buffer for per-vector statistics (TIES thresholds)."""
        buffer = self._scratch.get(dtype)
        if buffer is None or buffer.numel() < count:
            buffer = self._scratch[dtype] = torch.empty(count, dtype=dtype)
        return buffer[:count]


def _copy_tensor(inputs: MergeInputs, info: TensorInfo, writer: SafetensorsWriter) -> None:
    buffer = inputs.base.read(info.name)
    raw = buffer.reshape(-1).view(torch.uint8)
    for start in range(0, raw.numel(), COPY_CHUNK_BYTES):
        writer.write_bytes(info.name, memoryview(raw[start : start + COPY_CHUNK_BYTES].numpy()))


def _merge_linear(
    inputs: MergeInputs,
    info: TensorInfo,
    writer: SafetensorsWriter,
    coefficients: list[float],
    buffers: _Buffers,
) -> None:
    """``base + sum_i c_i tau_i`` reading one vector chunk at a time into cached buffers."""
    work_dtype = compute_dtype(info.dtype)
    chunk = min(info.numel, LINEAR_CHUNK)
    for start in range(0, info.numel, chunk):
        count = min(chunk, info.numel - start)
        row, base = buffers.get(info.dtype, 1, count)
        acc = buffers.accumulator(work_dtype, count)
        for coefficient, reader in zip(coefficients, inputs.vectors, strict=True):
            reader.read_into(info.name, row[0], start)
            acc.add_(
                row[0] if row.dtype == work_dtype else row[0].to(work_dtype), alpha=coefficient
            )
        inputs.base.read_into(info.name, base, start)
        writer.write(info.name, add_to_base(base, acc, info.name))


def _merge_tensor(
    inputs: MergeInputs,
    info: TensorInfo,
    writer: SafetensorsWriter,
    job: tuple[MergeStrategy, StrategyParams, Tensor, int],
    buffers: _Buffers,
    buffer_bytes: int,
) -> None:
    strategy, params, weights, seed = job
    n = len(inputs.vectors)
    cast = weights.to(compute_dtype(info.dtype))
    coefficients = linear_coefficients(strategy, params, info.name, cast)
    if coefficients is not None:
        _merge_linear(inputs, info, writer, coefficients.tolist(), buffers)
        return
    stats = None
    if strategy.needs_stats:
        scratch = buffers.scratch(info.dtype, info.numel)
        rows = (r.read_into(info.name, scratch) for r in inputs.vectors)
        stats = vector_stats(strategy, params, info.name, rows)
    chunk = _chunk_elements(n, info.dtype.itemsize, info.numel, buffer_bytes)
    for start in range(0, info.numel, chunk):
        count = min(chunk, info.numel - start)
        deltas, base = buffers.get(info.dtype, n, count)
        for row, reader in enumerate(inputs.vectors):
            reader.read_into(info.name, deltas[row], start)
        inputs.base.read_into(info.name, base, start)
        ctx = TensorContext(key=info.name, seed=seed, offset=start, numel=info.numel, stats=stats)
        writer.write(info.name, combine_chunk(strategy, params, base, deltas, weights, ctx))


def _lineage(
    inputs: MergeInputs,
    vector_paths: Sequence[Path],
    strategy: MergeStrategy,
    params: StrategyParams,
    weights: list[float] | None,
    seed: int,
) -> dict[str, Any]:
    return {
        "base_sha256": inputs.base_sha256,
        "strategy": strategy.name,
        "params": params.model_dump(by_alias=True),
        "weights": weights,
        "seed": seed,
        "vectors": [
            {
                "file": path.name,
                "hospital": meta.hospital,
                "num_samples": meta.num_samples,
                "base_id": meta.base_id,
                "created_at": meta.created_at,
            }
            for path, meta in zip(vector_paths, inputs.metadata, strict=True)
        ],
    }


@contextmanager
def _one_intra_op_thread() -> Iterator[None]:
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


def merge_files(
    base_path: str | Path,
    vector_paths: Sequence[str | Path],
    out_path: str | Path,
    *,
    strategy: str | MergeStrategy,
    params: StrategyParams | dict[str, object] | None = None,
    weights: Sequence[float] | None = None,
    seed: int = 0,
    provenance: Mapping[str, Any] | None = None,
    progress: Progress | None = None,
    base_sha256: str | None = None,
    buffer_bytes: int = DEFAULT_BUFFER_BYTES,
) -> MergeResult:
    """Merge vector files onto a base model file and write the merged model file.

    Every input is checked (strategy, parameters, weights, headers, base identity,
    tensor names, shapes and dtypes) before any tensor is read. The output holds
    the base's tensor names; its ``medvec.model`` header carries ``provenance``
    plus ``lineage``. Deterministic given the inputs, their order and ``seed``.
    """
    started = time.perf_counter()
    chosen = get_strategy(strategy)
    parsed = chosen.parse_params(params)
    paths = [Path(p) for p in vector_paths]
    inputs = open_inputs(Path(base_path), paths, base_sha256=base_sha256)
    try:
        resolved = resolve_weights(
            chosen, weights, [m.num_samples for m in inputs.metadata], len(paths)
        )
        weight_tensor = torch.tensor(resolved or [1.0] * len(paths), dtype=torch.float64)
        lineage = _lineage(inputs, paths, chosen, parsed, resolved, seed)
        header = {
            FORMAT_KEY: MODEL_FORMAT,
            SPEC_KEY: inputs.base.metadata.get(SPEC_KEY, "{}"),
            PROVENANCE_KEY: json.dumps({**dict(provenance or {}), "lineage": lineage}),
        }
        tensors = list(inputs.base.header.tensors.values())
        layout = [(t.name, t.dtype, t.shape) for t in tensors]
        job = (chosen, parsed, weight_tensor, seed)
        buffers = _Buffers()
        with SafetensorsWriter(out_path, layout, header) as writer, _one_intra_op_thread():
            for done, info in enumerate(tensors, start=1):
                if info.name in inputs.floating:
                    _merge_tensor(inputs, info, writer, job, buffers, buffer_bytes)
                else:
                    _copy_tensor(inputs, info, writer)
                if progress is not None:
                    progress(done, len(tensors), info.name)
            sha = writer.commit()
    finally:
        inputs.close()
    return MergeResult(
        path=Path(out_path),
        sha256=sha,
        strategy=chosen.name,
        params=parsed.model_dump(by_alias=True),
        weights=resolved,
        seed=seed,
        num_vectors=len(paths),
        num_tensors=len(tensors),
        seconds=time.perf_counter() - started,
        lineage=lineage,
    )
