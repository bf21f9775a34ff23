"""Running sums: a linear merge of N vectors kept up to date in O(one vector) per change.

For one base and one weighting, the sums file holds, for every floating tensor of the
base, ``S = sum_i w_i tau_i`` in float64, and its header the total weight
``W = sum_i w_i`` and the members (which vector, with which weight). A linear merge
is a function of ``S`` and ``W`` alone:

- weighted mean: ``theta = base + S / W``;
- task arithmetic: ``theta = base + lambda * S`` (running statistics ``base + S / W``).

So when a hospital pushes a new vector, its old share is subtracted and the new one
added (``update_sums``), reading the two vectors and the sums, not the N vectors; a
removed hospital is subtracted the same way; and the new version is written in the
same pass. A leave-one-out model (``S - w_k tau_k``, ``W - w_k``) costs one vector read.

Exactness: the sums are float64, so adding and subtracting float32 vectors is exact
up to float64 rounding (about 1e-16 relative per operation); the merged model is
rounded to the base's dtype once, as the streaming engine rounds it, and agrees with
the engine's float32 accumulation to about 1e-6 relative. ``build_sums`` recomputes
the sums from scratch; comparing it with the running file bounds the drift
(``compare_sums``). Non-linear strategies (TIES, DARE, median, trimmed mean) have no
such sums and keep the full streaming merge.

The sums are derived data, never content-addressed: each update writes a new file
under a temporary name and renames it into place without hashing or fsyncing it (both
cost more than the update's arithmetic). A crash therefore leaves the old sums, the new
ones, or (after a power loss) an unreadable file, which the registry detects and
rebuilds from the vectors (``build_sums``); the merged model itself is written durably.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from medvec.errors import MergeError
from medvec.hashing import sha256_file
from medvec.merging import masks
from medvec.merging.combine import add_to_base, linear_coefficients
from medvec.merging.engine import MergeResult, one_blas_thread
from medvec.merging.inputs import MergeInputs, open_inputs
from medvec.merging.registry import get_strategy
from medvec.merging.sums_file import (
    SUMS_FORMAT,
    Share,
    SumsHeader,
    header_of,
    read_sums_header,
    sums_writer,
    updated_header,
)
from medvec.models.spec import FORMAT_KEY, MODEL_FORMAT, PROVENANCE_KEY, SPEC_KEY
from medvec.vectors.arrays import ArrayReader
from medvec.vectors.floats import storage_dtype, widen_into, work_dtype
from medvec.vectors.validate import base_floating_tensors
from medvec.vectors.writer import SafetensorsWriter

__all__ = [
    "SUMS_FORMAT",
    "Share",
    "SumsHeader",
    "build_sums",
    "compare_sums",
    "merge_from_sums",
    "read_sums_header",
    "update_sums",
]

CHUNK = 1 << 18  # elements: the float64 accumulator and one row stay in the CPU cache


def _model_writer(
    inputs: MergeInputs, out: Path, provenance: Mapping[str, Any]
) -> SafetensorsWriter:
    layout = [(t.name, t.dtype_name, t.shape) for t in inputs.base.header.tensors.values()]
    header = {
        FORMAT_KEY: MODEL_FORMAT,
        SPEC_KEY: inputs.base.metadata.get(SPEC_KEY, "{}"),
        PROVENANCE_KEY: json.dumps(dict(provenance)),
    }
    return SafetensorsWriter(out, layout, header)


Scale = Callable[[str], float]
"""``scale(tensor)``: the merged delta of a tensor is ``scale * S``."""


def _stream(
    inputs: MergeInputs,
    signed: Sequence[float],
    sums: ArrayReader | None,
    sums_out: SafetensorsWriter | None,
    model_out: SafetensorsWriter | None,
    scale: Scale | None,
) -> None:
    """One pass over the base's tensors: ``S' = S + sum_j signed_j * tau_j`` chunk by chunk,
    written to ``sums_out`` and/or as ``base + scale * S'`` to ``model_out``.

    Each vector chunk is widened to float64 and added by a fused multiply-add (``axpy``),
    the arithmetic of the torch code this replaced, so the sums keep their bits."""
    acc_buffer = np.empty(CHUNK, dtype=np.float64)
    wide = np.empty(CHUNK, dtype=np.float64)
    raw: dict[str, NDArray[Any]] = {}
    for info in inputs.base.header.tensors.values():
        if info.name not in inputs.floating:
            if model_out is not None:
                model_out.write(info.name, inputs.base.read_array(info.name))
            continue
        dtype = storage_dtype(info.dtype_name)
        row = raw.setdefault(info.dtype_name, np.empty(CHUNK, dtype=dtype))
        factor = scale(info.name) if scale is not None else 0.0
        for start in range(0, info.numel, CHUNK):
            count = min(CHUNK, info.numel - start)
            acc = acc_buffer[:count]
            if sums is not None:
                sums.read_array_into(info.name, acc, start)
            else:
                acc[...] = 0.0
            for weight, reader in zip(signed, inputs.vectors, strict=True):
                reader.read_array_into(info.name, row[:count], start)
                masks.axpy(acc, _to_float64(row[:count], info.dtype_name, wide[:count]), weight)
            if sums_out is not None:
                sums_out.write(info.name, acc)
            if model_out is not None:
                base = inputs.base.read_array_into(info.name, np.empty(count, dtype), start)
                work = work_dtype(info.dtype_name)
                base_work = widen_into(base, info.dtype_name, np.empty(count, work))
                delta = (acc * factor).astype(work)
                model_out.write(
                    info.name, add_to_base(base_work, delta, info.name, info.dtype_name)
                )


def _to_float64(
    row: NDArray[Any], dtype_name: str, out: NDArray[np.float64]
) -> NDArray[np.float64]:
    if dtype_name == "BF16":
        return widen_into(row, dtype_name, np.empty(row.size, np.float32)).astype(np.float64)
    out[...] = row
    return out


def _scale_for(strategy: str, params: Mapping[str, Any] | None, total_weight: float) -> Scale:
    """``scale(key)`` with ``merged delta = scale * S``, from the strategy's own coefficients
    (``c_i = scale * w_i``): ``1/W`` for the weighted mean and running statistics,
    lambda for task arithmetic."""
    chosen = get_strategy(strategy)
    if not chosen.is_linear:
        raise MergeError(
            f"{chosen.name} is not linear: it cannot be built from running sums",
            hint="merge it with the streaming engine (merge_files)",
        )
    parsed = chosen.parse_params(dict(params or {}))
    if not total_weight > 0:
        raise MergeError("the sums hold no vectors", hint="add at least one vector first")
    weight = np.array([total_weight], dtype=np.float64)

    def scale(key: str) -> float:
        coefficients = linear_coefficients(chosen, parsed, key, weight)
        assert coefficients is not None
        return float(coefficients[0]) / total_weight

    return scale


def _open(
    base_path: Path, shares: Sequence[Share], base_sha256: str | None, rebase: bool
) -> MergeInputs:
    paths = [s.path for s in shares]
    if not paths:  # open_inputs refuses an empty list
        return _base_only(base_path, base_sha256)
    return open_inputs(base_path, paths, base_sha256=base_sha256, rebase=rebase)


def _base_only(base_path: Path, base_sha256: str | None) -> MergeInputs:
    stack = ExitStack()
    base = stack.enter_context(ArrayReader(base_path))
    floating = set(base_floating_tensors(base.header, base_path))
    sha = base_sha256 or sha256_file(base_path)
    return MergeInputs(base, sha, [], [], floating, stack)


def build_sums(
    base_path: str | Path,
    shares: Sequence[Share],
    out_path: str | Path,
    *,
    base_sha256: str | None = None,
    rebase: bool = False,
) -> SumsHeader:
    """The sums of ``shares`` computed from scratch (the full recompute), in one pass."""
    inputs = _open(Path(base_path), shares, base_sha256, rebase)
    try:
        header = updated_header(SumsHeader(base_sha256=inputs.base_sha256), shares, ())
        with sums_writer(inputs, header, out_path) as writer, one_blas_thread():
            _stream(inputs, [s.weight for s in shares], None, writer, None, None)
            writer.commit()
    finally:
        inputs.close()
    return header


@dataclass(frozen=True)
class SumsUpdate:
    """The new sums' header and, when asked, the model merged from them."""

    header: SumsHeader
    merged: MergeResult | None


def update_sums(
    base_path: str | Path,
    sums_path: str | Path,
    out_path: str | Path | None,
    *,
    add: Sequence[Share] = (),
    remove: Sequence[Share] = (),
    merged_path: str | Path | None = None,
    strategy: str = "weighted_mean",
    params: Mapping[str, Any] | None = None,
    provenance: Mapping[str, Any] | None = None,
    base_sha256: str | None = None,
    rebase: bool = False,
) -> SumsUpdate:
    """Subtract ``remove``'s shares and add ``add``'s, reading those vectors and the sums
    once; write the new sums to ``out_path`` (``None``: keep none, e.g. a leave-one-out)
    and, with ``merged_path``, the linear merge ``strategy`` of the new sums in the same
    pass. Every input is checked before any tensor is read."""
    started = time.perf_counter()
    shares = [*remove, *add]
    signed = [-s.weight for s in remove] + [s.weight for s in add]
    with ArrayReader(sums_path) as sums:
        old = header_of(sums, Path(sums_path))
        inputs = _open(Path(base_path), shares, base_sha256, rebase)
        try:
            if old.base_sha256 != inputs.base_sha256:
                raise MergeError(
                    "the sums belong to another base", hint="rebuild them for this base"
                )
            header = updated_header(old, add, remove)
            scale = None
            if merged_path is not None:
                scale = _scale_for(strategy, params, header.total_weight)
            lineage = {
                "base_sha256": inputs.base_sha256,
                "strategy": strategy,
                "params": dict(params or {}),
                "weights": list(header.members.values()),
                "members": list(header.members),
                "from_sums": True,
            }
            provenance_doc = {**dict(provenance or {}), "lineage": lineage}
            with ExitStack() as writers, one_blas_thread():
                sums_out = (
                    writers.enter_context(sums_writer(inputs, header, out_path))
                    if out_path is not None
                    else None
                )
                model_out = (
                    writers.enter_context(_model_writer(inputs, Path(merged_path), provenance_doc))
                    if merged_path is not None
                    else None
                )
                _stream(inputs, signed, sums, sums_out, model_out, scale)
                sha = model_out.commit() if model_out is not None else ""
                if sums_out is not None:
                    sums_out.commit()
        finally:
            inputs.close()
    merged = None
    if merged_path is not None:
        merged = MergeResult(
            path=Path(merged_path),
            sha256=sha,
            strategy=strategy,
            params=dict(params or {}),
            weights=list(header.members.values()),
            seed=0,
            num_vectors=len(header.members),
            num_tensors=len(inputs.base.header.tensors),
            seconds=time.perf_counter() - started,
            lineage=lineage,
        )
    return SumsUpdate(header, merged)


def merge_from_sums(
    base_path: str | Path,
    sums_path: str | Path,
    out_path: str | Path,
    *,
    strategy: str = "weighted_mean",
    params: Mapping[str, Any] | None = None,
    provenance: Mapping[str, Any] | None = None,
    without: Share | None = None,
    base_sha256: str | None = None,
) -> MergeResult:
    """The linear merge of the sums (reading the base and the sums only), or, with
    ``without``, of the sums minus that member's share: its leave-one-out model."""
    update = update_sums(
        base_path,
        sums_path,
        None,
        remove=[without] if without is not None else (),
        merged_path=out_path,
        strategy=strategy,
        params=params,
        provenance=provenance,
        base_sha256=base_sha256,
    )
    assert update.merged is not None
    return update.merged


def compare_sums(a: str | Path, b: str | Path) -> float:
    """The largest ``|a - b| / max(|b|, 1e-12)`` over all coordinates relative to each
    tensor's largest magnitude, and ``inf`` when the members differ: how far a running
    sums file drifted from its full recompute."""
    with ArrayReader(a) as left, ArrayReader(b) as right:
        ha, hb = header_of(left, Path(a)), header_of(right, Path(b))
        if ha.members.keys() != hb.members.keys() or ha.base_sha256 != hb.base_sha256:
            return float("inf")
        worst = abs(ha.total_weight - hb.total_weight) / max(abs(hb.total_weight), 1e-12)
        for name in right.keys():
            x, y = left.read_array(name, copy=True), right.read_array(name)
            scale = max(float(np.abs(y).max()) if y.size else 0.0, 1e-12)
            diff = float(np.abs(x - y).max()) if y.size else 0.0
            worst = max(worst, diff / scale)
    return worst
