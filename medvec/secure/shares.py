"""Share files: a vector's two additive shares, their plain sums, and decoding a sum.

A share file is a safetensors file whose tensors are the vector's tensor names in
``U64`` (elements of Z/2^64). Its header holds ``medvec.format = "share"`` and
``medvec.share`` (:class:`ShareInfo`: role A or B, the pair id both shares carry, the
public weight, the encoding). The two shares add up to the encoding of ``weight * tau``:
the hospital pre-scales its own vector, so that the only sums ever released, plain 0/1
sums, give the weighted mean once divided by the sum of the public weights (which a sum
file's header carries). Share A, for the registry, also carries the vector's non-secret
metadata under ``medvec.vector`` (base, samples, spec, privacy record); share B, for the
share holder, carries only what it needs to sum. Every function here reads and writes
one tensor at a time: memory stays O(one tensor) whatever the number of shares.
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
    weight: int | None = Field(
        default=None,
        ge=1,
        description="the public weight the vector was pre-scaled by; None: a share written "
        "before public weights, which encodes the vector unscaled",
    )
    frac_bits: int = FRAC_BITS
    modulus_bits: int = MODULUS_BITS

    @property
    def public_weight(self) -> int:
        """What the share encodes is ``public_weight * tau`` (1 for a share without one)."""
        return self.weight or 1


class SumInfo(BaseModel):
    """The header of a plain sum of shares: its members (each once) and their weights' sum."""

    members: list[str]
    weight: int = Field(ge=0, description="the sum of the members' public weights")
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
    weight: int,
) -> tuple[Path, Path]:
    """Encode ``weight * tensors`` and write share A (with ``metadata``) and share B, both
    recording the public ``weight``. The caller checks that the scaled vector fits the
    encoding (:func:`medvec.secure.encoding.max_total_weight`)."""
    info = ShareInfo(
        role="A",
        pair_id=pair_id,
        hospital=metadata.hospital,
        base_id=metadata.base_id,
        base_sha256=metadata.base_sha256,
        weight=weight,
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
            scaled = tensor.detach().cpu().to(torch.float64).numpy() * float(weight)
            share_a, share_b = split(encode(scaled))
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


def sum_shares(paths: Sequence[Path], out: Path) -> str:
    """Write the plain sum of the shares (mod 2^64), tensor by tensor; return its sha256.
    The header names the members (the shares' pair ids) and their public weights' sum."""
    return combine_shares(None, paths, [], out)


def _summed(start: Path | None, add: Sequence[Path], remove: Sequence[Path]) -> SumInfo:
    """The header of ``start + sum(add) - sum(remove)``: every member at most once."""
    held = read_sum_info(start) if start is not None else SumInfo(members=[], weight=0)
    members, weight = set(held.members), held.weight
    for path in remove:
        info = read_share_info(path)
        if info.pair_id not in members:
            raise SecureAggregationError(f"pair {info.pair_id} is not in the sum it leaves")
        members.discard(info.pair_id)
        weight -= info.public_weight
    for path in add:
        info = read_share_info(path)
        if info.pair_id in members:
            raise SecureAggregationError(f"pair {info.pair_id} would be summed twice")
        members.add(info.pair_id)
        weight += info.public_weight
    if not members:
        raise SecureAggregationError("nothing to sum")
    return SumInfo(members=sorted(members), weight=weight)


def combine_shares(
    start: Path | None, add: Sequence[Path], remove: Sequence[Path], out: Path
) -> str:
    """Write ``start + sum(add) - sum(remove)`` (mod 2^64); ``start`` is a sum file (or
    ``None``: zero). Each share counts once: only plain sums exist. Return the sha256.

    Arithmetic in Z/2^64 is exact, so a running sum moved by subtracting a member and
    adding another holds the same bytes as the sum computed from scratch.
    """
    info = _summed(start, add, remove)
    with ExitStack() as stack:
        terms = [(stack.enter_context(LazyTensorReader(p)), +1) for p in add]
        terms += [(stack.enter_context(LazyTensorReader(p)), -1) for p in remove]
        first = stack.enter_context(LazyTensorReader(start)) if start is not None else None
        readers = ([first] if first is not None else []) + [r for r, _ in terms]
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
            for reader, sign in terms:
                term = _ring(reader.read(name))
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

    The result is ``scale * sum_i w_i tau_i`` (each ``w_i tau_i`` pre-scaled by its
    hospital): the only value that exists in the clear. Running statistics of
    normalisation layers are multiplied by ``stat_scale`` instead (default ``scale``):
    every merge averages them (``1 / sum_i w_i``), whatever it does to the weights (task
    arithmetic's lambda times the sum would give statistics of no network; see
    ``medvec.merging.combine``).
    """
    info_a, info_b = read_sum_info(sum_a), read_sum_info(sum_b)
    if info_a.members != info_b.members or info_a.weight != info_b.weight:
        raise SecureAggregationError(
            "the two sums are over different sets, or their shares record other weights",
            hint="ask the share holder for the same members; a hospital whose shares "
            "disagree on its weight must push again",
            registry={"members": info_a.members, "weight": info_a.weight},
            share_holder={"members": info_b.members, "weight": info_b.weight},
        )
    with LazyTensorReader(sum_a) as reader_a, LazyTensorReader(sum_b) as reader_b:
        tensors = {}
        for name in reader_a.keys():
            total = _ring(reader_a.read(name, copy=True)) + _ring(reader_b.read(name))
            factor = stat_scale if stat_scale is not None and is_running_stat(name) else scale
            tensors[name] = torch.from_numpy((decode(total) * factor).astype(np.float32))
    return save_vector(out, tensors, metadata)
