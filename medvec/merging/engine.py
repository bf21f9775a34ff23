"""The streaming merge engine: O(one model) memory whatever the number of vectors, no torch.

``merge_files`` checks every input before any tensor is read, then streams the base's
tensors in file order through ``medvec.merging.streaming`` (blocks of every vector's rows,
combined with the strategy on numpy, added to the base, appended to the output file; two
blocks and one output chunk in memory at any time). Integer buffers
(``num_batches_tracked``) are copied from the base. The output is a model file written
under a temporary name, fsynced and renamed, with the merge's lineage in its header.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel
from threadpoolctl import threadpool_limits

from medvec.merging.base import MergeStrategy, StrategyParams
from medvec.merging.inputs import MergeInputs, open_inputs
from medvec.merging.registry import get_strategy
from medvec.merging.streaming import Progress, StreamJob, stream_merge
from medvec.merging.weighting import resolve_weights
from medvec.models.spec import FORMAT_KEY, MODEL_FORMAT, PROVENANCE_KEY, SPEC_KEY
from medvec.vectors.writer import SafetensorsWriter

__all__ = [
    "DEFAULT_BUFFER_BYTES",
    "MergeResult",
    "Progress",
    "merge_files",
    "one_blas_thread",
]

DEFAULT_BUFFER_BYTES = 16 * 1024 * 1024
"""Bytes of one block (N vector rows and the base row); two blocks are in flight."""


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
def one_blas_thread() -> Iterator[None]:
    """Run BLAS kernels on one thread, restoring the setting afterwards.

    Every kernel here is memory-bound on a chunk of about a megabyte; fanning each out
    to a BLAS thread team costs more than it gains, and the engine already keeps a
    reader and a writer thread busy beside the one that computes.
    """
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def merge_files(
    base_path: str | Path,
    vector_paths: Sequence[str | Path],
    out_path: str | Path,
    *,
    strategy: str | MergeStrategy,
    params: StrategyParams | Mapping[str, object] | None = None,
    weights: Sequence[float] | None = None,
    seed: int = 0,
    provenance: Mapping[str, Any] | None = None,
    progress: Progress | None = None,
    base_sha256: str | None = None,
    buffer_bytes: int = DEFAULT_BUFFER_BYTES,
    rebase: bool = False,
) -> MergeResult:
    """Merge vector files onto a base model file and write the merged model file.

    Every input is checked (strategy, parameters, weights, headers, base identity,
    tensor names, shapes and dtypes) before any tensor is read. The output holds
    the base's tensor names; its ``medvec.model`` header carries ``provenance``
    plus ``lineage``. Deterministic given the inputs, their order and ``seed``.
    ``rebase`` accepts vectors of an older base of the same architecture (each vector's
    own base stays in the lineage): a vector is a direction, applied to this base.
    """
    started = time.perf_counter()
    chosen = get_strategy(strategy)
    parsed = chosen.parse_params(params)
    paths = [Path(p) for p in vector_paths]
    inputs = open_inputs(Path(base_path), paths, base_sha256=base_sha256, rebase=rebase)
    try:
        resolved = resolve_weights(
            chosen, weights, [m.num_samples for m in inputs.metadata], len(paths)
        )
        weight_array = np.array(resolved or [1.0] * len(paths), dtype=np.float64)
        lineage = _lineage(inputs, paths, chosen, parsed, resolved, seed)
        header = {
            FORMAT_KEY: MODEL_FORMAT,
            SPEC_KEY: inputs.base.metadata.get(SPEC_KEY, "{}"),
            PROVENANCE_KEY: json.dumps({**dict(provenance or {}), "lineage": lineage}),
        }
        tensors = list(inputs.base.header.tensors.values())
        layout = [(t.name, t.dtype_name, t.shape) for t in tensors]
        job = StreamJob(chosen, parsed, weight_array, seed)
        with SafetensorsWriter(out_path, layout, header) as writer, one_blas_thread():
            stream_merge(inputs, writer, job, buffer_bytes, progress)
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
