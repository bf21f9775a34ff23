"""The streaming merge's machinery: blocks of every vector's rows, read, combined and
written on three threads (``medvec.merging.engine.merge_files`` drives it).

For each tensor of the base, in file order, the same range of elements is read from
every vector into one reused ``(N, chunk)`` block by plain positional file reads
(``ArrayReader.read_array_into``), combined with the strategy on numpy, added to the base
and appended to the output file. The chunk length shrinks as N grows so that a block
stays within ``buffer_bytes``: memory is flat in N. A reader fills block k+1 while the
engine combines block k, and the writer writes and hashes block k-1 (the file reads and
the hashing release the GIL). Linear strategies take a faster path: one vector's row at a
time into an accumulator that stays in the CPU's cache.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from medvec.merging import masks
from medvec.merging.base import Array, MergeStrategy, StrategyParams, TensorContext
from medvec.merging.combine import add_to_base, combine_chunk, linear_coefficients, vector_stats
from medvec.merging.inputs import MergeInputs
from medvec.merging.masks import RANDOM_BLOCK
from medvec.vectors.floats import storage_dtype, widen_into, work_dtype
from medvec.vectors.header import TensorInfo
from medvec.vectors.writer import SafetensorsWriter

__all__ = ["Progress", "StreamJob", "stream_merge"]

LINEAR_QUANTUM = 1024
"""Chunk lengths of linear merges are multiples of this (4 KiB of float32)."""
LINEAR_CHUNK = 1 << 16
"""Elements a linear merge reads of one vector at a time: the row and the accumulator
(256 KiB each in float32) stay in the CPU's L2 cache."""
MIN_PART = 1 << 14
"""Fewest coordinates a compute thread takes of a chunk (below that, threads cost more)."""

Progress = Callable[[int, int, str], None]
"""``progress(done, total, tensor_name)`` after each tensor is written."""


def _chunk_elements(
    rows: int, itemsize: int, numel: int, buffer_bytes: int, quantum: int = RANDOM_BLOCK
) -> int:
    """Elements per chunk: a multiple of ``quantum`` that keeps ``rows`` rows within budget.

    Non-linear strategies use whole random blocks (DARE draws its masks per block: a chunk
    that cut blocks would draw them again); linear ones a page's worth of elements, so
    that a block stays small enough for the CPU cache whatever N.
    """
    fit = buffer_bytes // max(1, rows * itemsize)
    return max(quantum, fit // quantum * quantum) if fit < numel else numel


@dataclass(frozen=True)
class _Range:
    """Elements ``[start, start + count)`` of one tensor; ``merge``: of a floating tensor
    (read from every vector and the base), else copied from the base."""

    info: TensorInfo
    start: int
    count: int
    merge: bool


class _Block:
    """One reusable buffer; a filled block holds a range of every vector and of the base."""

    def __init__(self) -> None:
        self._raw = np.empty(0, dtype=np.uint8)
        self.rows: NDArray[Any] = self._raw
        self.base: NDArray[Any] = self._raw
        self.range: _Range | None = None

    def fill(self, inputs: MergeInputs, chunk: _Range) -> _Block:
        info, n = chunk.info, len(inputs.vectors) if chunk.merge else 0
        dtype = storage_dtype(info.dtype_name)
        row_bytes = chunk.count * dtype.itemsize
        if self._raw.size < (n + 1) * row_bytes:
            self._raw = np.empty((n + 1) * row_bytes, dtype=np.uint8)
        self.rows = self._raw[: n * row_bytes].view(dtype).reshape(n, chunk.count)
        self.base = self._raw[n * row_bytes : (n + 1) * row_bytes].view(dtype)
        for row, reader in zip(self.rows, inputs.vectors if chunk.merge else (), strict=True):
            reader.read_array_into(info.name, row, chunk.start)
        inputs.base.read_array_into(info.name, self.base, chunk.start)
        self.range = chunk
        return self


class _Work:
    """Float work arrays for half-precision blocks (float32 and float64 blocks are used as
    read) and the accumulator of linear merges, reused across blocks."""

    def __init__(self) -> None:
        self._buffers: dict[tuple[str, np.dtype], NDArray[Any]] = {}

    def get(self, what: str, dtype: np.dtype, size: int) -> NDArray[Any]:
        buffer = self._buffers.get((what, dtype))
        if buffer is None or buffer.size < size:
            buffer = self._buffers[(what, dtype)] = np.empty(size, dtype=dtype)
        return buffer[:size]

    def widen(self, what: str, raw: NDArray[Any], dtype_name: str) -> Array:
        dtype = work_dtype(dtype_name)
        if raw.dtype == dtype:
            return raw
        return widen_into(raw, dtype_name, self.get(what, dtype, raw.size).reshape(raw.shape))


def _plan(inputs: MergeInputs, buffer_bytes: int, quantum: int) -> Iterator[_Range]:
    n = len(inputs.vectors)
    for info in inputs.base.header.tensors.values():
        merge = info.name in inputs.floating
        rows = n + 1 if merge else 1
        chunk = _chunk_elements(rows, info.itemsize, info.numel, buffer_bytes, quantum)
        for start in range(0, info.numel, chunk) if info.numel else range(1):
            yield _Range(info, start, min(chunk, info.numel - start), merge)


@dataclass(frozen=True)
class StreamJob:
    strategy: MergeStrategy
    params: StrategyParams
    weights: NDArray[np.float64]
    seed: int


def _tensor_stats(inputs: MergeInputs, info: TensorInfo, job: StreamJob, work: _Work) -> Any:
    """Per-vector statistics over the whole tensor, when the strategy needs them (TIES)."""
    if not job.strategy.needs_stats:
        return None
    raw = work.get("stats", storage_dtype(info.dtype_name), info.numel)
    rows = (
        work.widen("stats-work", reader.read_array_into(info.name, raw), info.dtype_name)
        for reader in inputs.vectors
    )
    return vector_stats(job.strategy, job.params, info.name, rows)


def _combine(
    block: _Block, job: StreamJob, stats: Any, work: _Work, pool: _Compute
) -> list[NDArray[Any]]:
    """The merged chunk of a filled block, in the tensor's storage dtype, in parts."""
    assert block.range is not None
    info, start = block.range.info, block.range.start
    deltas = work.widen("rows", block.rows, info.dtype_name)
    base = work.widen("base", block.base, info.dtype_name)
    weights = job.weights.astype(deltas.dtype)
    coefficients = linear_coefficients(job.strategy, job.params, info.name, weights)
    if coefficients is not None:
        # one row at a time into an accumulator that stays in the CPU cache
        acc = work.get("acc", deltas.dtype, base.size)
        acc[...] = 0
        for row, coefficient in zip(deltas, coefficients.tolist(), strict=True):
            masks.axpy(acc, row, coefficient)
        return [add_to_base(base, acc, info.name, info.dtype_name)]
    # coordinates are independent: split the columns over the compute threads (sorts and
    # elementwise kernels release the GIL); each part knows its offset, so DARE's masks
    # and every result are those of the whole chunk
    parts = [
        pool.executor.submit(
            combine_chunk,
            job.strategy,
            job.params,
            base[lo:hi],
            deltas[:, lo:hi],
            job.weights,
            TensorContext(
                key=info.name, seed=job.seed, offset=start + lo, numel=info.numel, stats=stats
            ),
            info.dtype_name,
        )
        for lo, hi in _split(base.size, pool.max_workers)
    ]
    return [part.result() for part in parts]


def _split(count: int, workers: int) -> list[tuple[int, int]]:
    """``workers`` contiguous ranges of ``[0, count)``, none under ``MIN_PART`` unless alone."""
    parts = max(1, min(workers, count // MIN_PART))
    edges = [count * i // parts for i in range(parts + 1)]
    return list(zip(edges[:-1], edges[1:], strict=True))


@dataclass(frozen=True)
class _Compute:
    """The threads non-linear strategies' chunks are combined on."""

    executor: ThreadPoolExecutor
    max_workers: int


class _RowBuffers(threading.local):
    """One row and one accumulator per thread, reused: both stay in the CPU cache."""

    def __init__(self) -> None:
        self.work = _Work()


def _linear_range(
    inputs: MergeInputs, chunk: _Range, job: StreamJob, buffers: _RowBuffers
) -> NDArray[Any]:
    """``base + sum_i c_i tau_i`` over one range, reading each vector's row into a buffer
    that is added to the accumulator while it is still in the cache (copied ranges: the
    base's elements)."""
    info, work = chunk.info, buffers.work
    raw = work.get("row", storage_dtype(info.dtype_name), chunk.count)
    if not chunk.merge:
        return inputs.base.read_array_into(info.name, raw.copy(), chunk.start)
    dtype = work_dtype(info.dtype_name)
    weights = job.weights.astype(dtype)
    coefficients = linear_coefficients(job.strategy, job.params, info.name, weights)
    assert coefficients is not None
    acc = work.get("acc", dtype, chunk.count)
    acc[...] = 0
    for coefficient, reader in zip(coefficients.tolist(), inputs.vectors, strict=True):
        reader.read_array_into(info.name, raw, chunk.start)
        masks.axpy(acc, work.widen("row-work", raw, info.dtype_name), coefficient)
    base = inputs.base.read_array_into(info.name, raw, chunk.start)
    return add_to_base(
        work.widen("row-work", base, info.dtype_name), acc, info.name, info.dtype_name
    )


def _stream_linear(
    inputs: MergeInputs, writer: SafetensorsWriter, job: StreamJob, progress: Progress | None
) -> None:
    """Linear merges: ranges of ``LINEAR_CHUNK`` elements, each read and accumulated by one
    of a thread per core (reads and BLAS release the GIL), written in order."""
    ranges = list(_plan(inputs, LINEAR_CHUNK * 4 * (len(inputs.vectors) + 1), LINEAR_QUANTUM))
    total, done = len(inputs.base.header.tensors), 0
    workers = max(1, os.cpu_count() or 1)
    buffers = _RowBuffers()
    with ThreadPoolExecutor(workers, "medvec-merge") as pool:
        pending: deque[tuple[_Range, Future[NDArray[Any]]]] = deque()
        upcoming = iter(ranges)
        for chunk in upcoming:
            pending.append((chunk, pool.submit(_linear_range, inputs, chunk, job, buffers)))
            if len(pending) < 2 * workers:
                continue
            done = _write_next(pending, writer, done, total, progress)
        while pending:
            done = _write_next(pending, writer, done, total, progress)


def _write_next(
    pending: deque[tuple[_Range, Future[NDArray[Any]]]],
    writer: SafetensorsWriter,
    done: int,
    total: int,
    progress: Progress | None,
) -> int:
    chunk, future = pending.popleft()
    writer.write(chunk.info.name, future.result())
    if chunk.start + chunk.count >= chunk.info.numel:
        done += 1
        if progress is not None:
            progress(done, total, chunk.info.name)
    return done


def stream_merge(
    inputs: MergeInputs,
    writer: SafetensorsWriter,
    job: StreamJob,
    buffer_bytes: int,
    progress: Progress | None,
) -> None:
    """Every range of the plan, read one ahead on a helper thread, combined and written."""
    if job.strategy.is_linear:
        _stream_linear(inputs, writer, job, progress)
        return
    ranges = list(_plan(inputs, buffer_bytes, RANDOM_BLOCK))
    total = len(inputs.base.header.tensors)
    blocks, work = (_Block(), _Block()), _Work()
    done, stats = 0, None
    workers = max(1, os.cpu_count() or 1)
    with (
        ThreadPoolExecutor(1, "medvec-read") as reader,
        ThreadPoolExecutor(workers, "medvec-combine") as combine,
    ):
        pool = _Compute(combine, workers)
        pending: Future[_Block] | None = (
            reader.submit(blocks[0].fill, inputs, ranges[0]) if ranges else None
        )
        for index, chunk in enumerate(ranges):
            assert pending is not None
            block = pending.result()
            pending = (
                reader.submit(blocks[(index + 1) % 2].fill, inputs, ranges[index + 1])
                if index + 1 < len(ranges)
                else None
            )
            info = chunk.info
            if chunk.merge:
                if chunk.start == 0:
                    stats = _tensor_stats(inputs, info, job, work)
                for part in _combine(block, job, stats, work, pool):
                    writer.write(info.name, part)
            else:
                writer.write(info.name, block.base)
            if chunk.start + chunk.count >= info.numel:
                done += 1
                if progress is not None:
                    progress(done, total, info.name)
