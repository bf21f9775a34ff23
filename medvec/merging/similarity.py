"""How alike a merge's input vectors are: pairwise dot products streamed from the files.

The mean pairwise cosine similarity of the vectors is a cheap predictor of how well
they merge: vectors that point the same way average into a model near each of
them, vectors at right angles (cosine ~ 0) interfere. It is computed like a merge,
tensor by tensor and chunk by chunk into an ``(N, chunk)`` buffer of at most
``buffer_bytes``, so memory does not grow with N. Running statistics are left out
(they are statistics, not learned directions); integer buffers are not in vectors.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from medvec.errors import MergeError
from medvec.merging.engine import DEFAULT_BUFFER_BYTES
from medvec.vectors.arrays import ArrayReader
from medvec.vectors.floats import storage_dtype, widen_into
from medvec.vectors.names import is_running_stat

if TYPE_CHECKING:
    from torch import Tensor

Gram = NDArray[np.float64]

__all__ = ["mean_cosine", "mean_pairwise_cosine", "pairwise_dots", "pairwise_dots_in_memory"]


def pairwise_dots(
    vector_paths: Sequence[str | Path], *, buffer_bytes: int = DEFAULT_BUFFER_BYTES
) -> Gram:
    """``G[i, j] = <tau_i, tau_j>`` (float64, N x N) over every tensor but running statistics.

    The vectors must hold the same tensor names and shapes (as the vectors of one
    merge do: the engine checks them against the base first).
    """
    if not vector_paths:
        raise MergeError("no vectors", hint="pass at least one data vector file")
    n = len(vector_paths)
    gram = np.zeros((n, n), dtype=np.float64)
    with ExitStack() as stack:
        readers = [stack.enter_context(ArrayReader(p)) for p in vector_paths]
        for name in readers[0].keys():
            if is_running_stat(name):
                continue
            info = readers[0].info(name)
            chunk = max(1, min(info.numel, buffer_bytes // (n * 8)))
            raw = np.empty(n * chunk, dtype=storage_dtype(info.dtype_name))
            values = np.empty(n * chunk, dtype=np.float64)
            for start in range(0, info.numel, chunk):
                count = min(chunk, info.numel - start)
                rows = raw[: n * count].reshape(n, count)
                for row, reader in zip(rows, readers, strict=True):
                    reader.read_array_into(name, row, start)
                wide = values[: n * count].reshape(n, count)
                if info.dtype_name == "BF16":
                    wide[...] = widen_into(rows, "BF16", np.empty(rows.shape, np.float32))
                else:
                    wide[...] = rows
                gram += wide @ wide.T
    return gram


def pairwise_dots_in_memory(vectors: Sequence[Mapping[str, Tensor]]) -> Gram:
    """``pairwise_dots`` of in-memory vectors (the simulation's), tensor by tensor."""
    n = len(vectors)
    gram = np.zeros((n, n), dtype=np.float64)
    for name in vectors[0] if vectors else ():
        if not is_running_stat(name):
            rows = np.stack([v[name].detach().cpu().reshape(-1).double().numpy() for v in vectors])
            gram += rows @ rows.T
    return gram


def mean_cosine(gram: Gram) -> float | None:
    """Mean of ``cos(tau_i, tau_j)`` over the pairs ``i < j`` of a Gram matrix; ``None``
    with fewer than two vectors or when no pair has two non-zero vectors."""
    norms = np.sqrt(gram.diagonal()).tolist()
    cosines = [
        float(gram[i, j]) / (norms[i] * norms[j])
        for i in range(len(norms))
        for j in range(i + 1, len(norms))
        if norms[i] > 0 and norms[j] > 0
    ]
    return math.fsum(cosines) / len(cosines) if cosines else None


def mean_pairwise_cosine(
    vector_paths: Sequence[str | Path], *, buffer_bytes: int = DEFAULT_BUFFER_BYTES
) -> float | None:
    """``mean_cosine`` of the vector files' Gram matrix, streamed."""
    return mean_cosine(pairwise_dots(vector_paths, buffer_bytes=buffer_bytes))
