"""Share files: a vector's two additive shares, their weighted sums, and decoding a sum.

A share file is a safetensors file whose tensors are the vector's tensor names in
``U64`` (elements of Z/2^64). Its header holds ``medvec.format = "share"`` and
``medvec.share`` (:class:`ShareInfo`: role A or B, the pair id both shares carry, the
encoding). Share A, for the registry, also carries the vector's non-secret metadata
under ``medvec.vector`` (base, samples, spec, privacy record); share B, for the share
holder, carries only what it needs to sum. Every function here reads and writes one
tensor at a time: memory stays O(one tensor) whatever the number of shares.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from torch import Tensor

from medvec.errors import SecureAggregationError
from medvec.models.files import FORMAT_KEY
from medvec.secure.encoding import FRAC_BITS, MODULUS_BITS, decode, encode, split
from medvec.vectors.compute import is_running_stat
from medvec.vectors.header import DEFAULT_MAX_HEADER_BYTES, read_safetensors_header
from medvec.vectors.io import VECTOR_KEY, save_vector
from medvec.vectors.lazy import LazyTensorReader
from medvec.vectors.metadata import VectorMetadata
from medvec.vectors.writer import SafetensorsWriter

__all__ = [
    "SHARE_FORMAT",
    "SHARE_KEY",
    "SUM_FORMAT",
    "ShareInfo",
    "SumInfo",
    "combine_shares",
    "decode_sum_to_vector",
    "is_share_file",
    "read_share_info",
    "read_share_metadata",
    "read_sum_info",
    "sum_shares",
    "validate_share",
    "write_shares",
]

SHARE_FORMAT = "share"
SUM_FORMAT = "share_sum"
SHARE_KEY = "medvec.share"
SUM_KEY = "medvec.share_sum"


class ShareInfo(BaseModel):
    """What a share file says about itself."""

    model_config = ConfigDict(extra="forbid")

    role: Literal["A", "B"]
    pair_id: str = Field(pattern=r"^[0-9a-f]{32}$")
    hospital: str = Field(min_length=1)
    base_id: str = Field(min_length=1)
    base_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    frac_bits: int = FRAC_BITS
    modulus_bits: int = MODULUS_BITS


class SumInfo(BaseModel):
    """The header of a weighted sum of shares."""

    members: dict[str, int]
    frac_bits: int = FRAC_BITS
    modulus_bits: int = MODULUS_BITS


def _ring(tensor: Tensor) -> np.ndarray:
    return tensor.numpy().view(np.uint64)


def write_shares(
    tensors: Mapping[str, Tensor],
    metadata: VectorMetadata,
    out_a: Path,
    out_b: Path,
    *,
    pair_id: str,
) -> tuple[Path, Path]:
    """Encode ``tensors`` and write share A (with ``metadata``) and share B."""
    info = ShareInfo(
        role="A",
        pair_id=pair_id,
        hospital=metadata.hospital,
        base_id=metadata.base_id,
        base_sha256=metadata.base_sha256,
    )
    layout = [(name, torch.uint64, tuple(t.shape)) for name, t in tensors.items()]
    header_a = {
        FORMAT_KEY: SHARE_FORMAT,
        SHARE_KEY: info.model_dump_json(),
        VECTOR_KEY: metadata.model_dump_json(),
    }
    header_b = {
        FORMAT_KEY: SHARE_FORMAT,
        SHARE_KEY: info.model_copy(update={"role": "B"}).model_dump_json(),
    }
    with ExitStack() as stack:
        writer_a = SafetensorsWriter(out_a, layout, header_a)
        stack.callback(writer_a.abort)
        writer_b = SafetensorsWriter(out_b, layout, header_b)
        stack.callback(writer_b.abort)
        for name, tensor in tensors.items():
            share_a, share_b = split(encode(tensor.detach().cpu().to(torch.float64).numpy()))
            writer_a.write(name, torch.from_numpy(share_a))
            writer_b.write(name, torch.from_numpy(share_b))
        writer_a.commit()
        writer_b.commit()
    return out_a, out_b


def is_share_file(path: Path, *, max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES) -> bool:
    header = read_safetensors_header(path, max_header_bytes)
    return header.metadata.get(FORMAT_KEY) == SHARE_FORMAT


def read_share_info(path: Path, *, max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES) -> ShareInfo:
    header = read_safetensors_header(path, max_header_bytes)
    if header.metadata.get(FORMAT_KEY) != SHARE_FORMAT:
        raise SecureAggregationError(
            "the file is not a share",
            hint="split a vector with `medvec push --secure`",
        )
    try:
        return ShareInfo.model_validate_json(header.metadata.get(SHARE_KEY) or "")
    except ValidationError as exc:
        raise SecureAggregationError(
            f"the share has invalid {SHARE_KEY} metadata: {exc.errors()[0]['msg']}",
            hint="write the shares again with `medvec push --secure`",
        ) from exc


def read_share_metadata(
    path: Path, *, max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES
) -> VectorMetadata:
    """The non-secret vector metadata share A carries."""
    header = read_safetensors_header(path, max_header_bytes)
    try:
        return VectorMetadata.model_validate_json(header.metadata.get(VECTOR_KEY) or "")
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or VECTOR_KEY
        raise SecureAggregationError(
            f"the share carries no valid {VECTOR_KEY} metadata: {where}: {err['msg']}",
            hint="share A must carry the vector's metadata; write it with `medvec push --secure`",
        ) from exc


def validate_share(
    path: Path, base_path: Path, *, max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES
) -> ShareInfo:
    """Check a share against its base: the base's floating tensor names, same shapes, U64.

    Nothing about the values can be checked: a share is uniform noise by design.
    """
    info = read_share_info(path, max_header_bytes=max_header_bytes)
    if info.frac_bits != FRAC_BITS or info.modulus_bits != MODULUS_BITS:
        raise SecureAggregationError(
            f"the share is encoded with {info.frac_bits} fractional bits mod "
            f"2^{info.modulus_bits}; this version uses {FRAC_BITS} mod 2^{MODULUS_BITS}",
            hint="upgrade medvec on the hospital and split the vector again",
        )
    share = read_safetensors_header(path, max_header_bytes)
    base = read_safetensors_header(base_path, max_header_bytes)
    expected = {n: t.shape for n, t in base.tensors.items() if t.dtype.is_floating_point}
    got = {n: t.shape for n, t in share.tensors.items()}
    reasons = []
    if set(expected) != set(got):
        missing = sorted(set(expected) - set(got))[:5]
        extra = sorted(set(got) - set(expected))[:5]
        reasons.append(f"tensor names differ from the base's (missing {missing}, extra {extra})")
    reasons += [
        f"{n}: shape {list(got[n])}, the base has {list(s)}"
        for n, s in expected.items()
        if n in got and got[n] != s
    ][:5]
    reasons += [
        f"{n}: dtype {t.dtype}, shares are uint64"
        for n, t in share.tensors.items()
        if t.dtype != torch.uint64
    ][:5]
    if reasons:
        raise SecureAggregationError(
            "the share does not fit its base: " + "; ".join(reasons),
            hint="split a vector computed against this base",
            reasons=reasons,
        )
    return info


def sum_shares(
    paths: Sequence[Path], weights: Sequence[int], out: Path, members: Sequence[str]
) -> str:
    """Write ``sum_i weights[i] * share_i`` (mod 2^64), tensor by tensor; return its sha256.

    ``members`` (the pair ids, in the order of ``paths``) are recorded in the header.
    """
    if not paths or len(paths) != len(weights) or len(paths) != len(members):
        raise SecureAggregationError("give as many weights and members as shares (at least 1)")
    info = SumInfo(members={m: int(w) for m, w in zip(members, weights, strict=True)})
    return combine_shares(None, list(zip(paths, weights, strict=True)), [], out, info)


def combine_shares(
    start: Path | None,
    add: Sequence[tuple[Path, int]],
    remove: Sequence[tuple[Path, int]],
    out: Path,
    info: SumInfo,
) -> str:
    """Write ``start + sum w * add_i - sum w * remove_i`` (mod 2^64) with header ``info``;
    ``start`` is a sum file (or ``None``: zero). Return the sha256.

    Arithmetic in Z/2^64 is exact, so a running sum moved by subtracting a member and
    adding another holds the same bytes as the sum computed from scratch.
    """
    if any(int(w) <= 0 for _, w in [*add, *remove]):
        raise SecureAggregationError("share weights must be positive integers")
    with ExitStack() as stack:
        terms = [(stack.enter_context(LazyTensorReader(p)), int(w), +1) for p, w in add]
        terms += [(stack.enter_context(LazyTensorReader(p)), int(w), -1) for p, w in remove]
        first = stack.enter_context(LazyTensorReader(start)) if start is not None else None
        readers = ([first] if first is not None else []) + [r for r, _, _ in terms]
        if not readers:
            raise SecureAggregationError("nothing to sum")
        names = readers[0].keys()
        for reader in readers[1:]:
            if sorted(reader.keys()) != sorted(names):
                raise SecureAggregationError(f"{reader.path.name} holds other tensors")
        layout = [(n, torch.uint64, readers[0].info(n).shape) for n in names]
        writer = SafetensorsWriter(
            out, layout, {FORMAT_KEY: SUM_FORMAT, SUM_KEY: info.model_dump_json()}
        )
        stack.callback(writer.abort)
        for name in names:
            for reader in readers:
                if reader.info(name).dtype != torch.uint64:
                    raise SecureAggregationError(f"{reader.path.name}: {name} is not uint64")
            if first is not None:
                total = _ring(first.read(name, copy=True))
            else:
                total = np.zeros(readers[0].info(name).shape, dtype=np.uint64)
            for reader, weight, sign in terms:
                term = np.uint64(weight) * _ring(reader.read(name))
                if sign > 0:
                    total += term
                else:
                    total -= term
            writer.write(name, torch.from_numpy(total))
        return writer.commit()


def read_sum_info(path: Path) -> SumInfo:
    header = read_safetensors_header(path)
    if header.metadata.get(FORMAT_KEY) != SUM_FORMAT:
        raise SecureAggregationError(f"{path.name} is not a sum of shares")
    return SumInfo.model_validate(json.loads(header.metadata.get(SUM_KEY) or "{}"))


def decode_sum_to_vector(
    sum_a: Path,
    sum_b: Path,
    out: Path,
    metadata: VectorMetadata,
    scale: float,
    *,
    stat_scale: float | None = None,
) -> Path:
    """Add the two servers' sums, decode, multiply by ``scale`` and write a float32 vector.

    The result is ``scale * sum_i w_i tau_i``: the only value that exists in the clear.
    Running statistics of normalisation layers are multiplied by ``stat_scale`` instead
    (default ``scale``): every merge averages them (``1 / sum_i w_i``), whatever it does
    to the weights (task arithmetic's lambda times the sum would give statistics of no
    network; see ``medvec.merging.combine``).
    """
    info_a, info_b = read_sum_info(sum_a), read_sum_info(sum_b)
    if info_a.members != info_b.members:
        raise SecureAggregationError(
            "the two sums are over different sets or weights",
            hint="ask the share holder for the same members and weights",
            registry=info_a.members,
            share_holder=info_b.members,
        )
    with LazyTensorReader(sum_a) as reader_a, LazyTensorReader(sum_b) as reader_b:
        tensors = {}
        for name in reader_a.keys():
            total = _ring(reader_a.read(name, copy=True)) + _ring(reader_b.read(name))
            factor = stat_scale if stat_scale is not None and is_running_stat(name) else scale
            tensors[name] = torch.from_numpy((decode(total) * factor).astype(np.float32))
    return save_vector(out, tensors, metadata)
