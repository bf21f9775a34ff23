"""The running-sums file: its header (base, total weight, members) and how it is read,
changed and written. ``medvec.merging.sums`` does the arithmetic."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from medvec.errors import MergeError
from medvec.merging.inputs import MergeInputs
from medvec.models.spec import FORMAT_KEY, SPEC_KEY
from medvec.vectors.arrays import ArrayReader
from medvec.vectors.writer import SafetensorsWriter

__all__ = [
    "SUMS_FORMAT",
    "SUMS_KEY",
    "Share",
    "SumsHeader",
    "header_of",
    "read_sums_header",
    "sums_writer",
    "updated_header",
]

SUMS_FORMAT = "sums"
SUMS_KEY = "medvec.sums"


class SumsHeader(BaseModel):
    """What a sums file holds: its base, total weight and members (``id -> weight``)."""

    model_config = ConfigDict(frozen=True)

    base_sha256: str
    total_weight: float = 0.0
    members: dict[str, float] = Field(default_factory=dict)


@dataclass(frozen=True)
class Share:
    """One vector file's share of the sums: ``weight * tau``, known as ``member``."""

    member: str
    path: Path
    weight: float


def read_sums_header(path: str | Path) -> SumsHeader:
    """The header of a sums file; ``MergeError`` when ``path`` is not one."""
    with ArrayReader(path) as reader:
        return header_of(reader, Path(path))


def header_of(reader: ArrayReader, path: Path) -> SumsHeader:
    if reader.metadata.get(FORMAT_KEY) != SUMS_FORMAT or SUMS_KEY not in reader.metadata:
        raise MergeError(
            f"{path.name} is not a running-sums file",
            hint="rebuild the sums from the vectors (build_sums)",
        )
    return SumsHeader.model_validate_json(reader.metadata[SUMS_KEY])


def updated_header(header: SumsHeader, add: Sequence[Share], remove: Sequence[Share]) -> SumsHeader:
    members = dict(header.members)
    for share in remove:
        if members.get(share.member) != share.weight:
            raise MergeError(
                f"{share.member} is not in the sums with weight {share.weight}",
                hint="subtract a member with the weight it was added with",
                member=share.member,
            )
        del members[share.member]
    for share in add:
        if share.member in members:
            raise MergeError(
                f"{share.member} is already in the sums", hint="subtract its old share first"
            )
        if not share.weight > 0:
            raise MergeError(f"{share.member}: a share's weight must be > 0", hint="drop it")
        members[share.member] = share.weight
    return SumsHeader(
        base_sha256=header.base_sha256,
        total_weight=float(sum(members.values())),
        members=members,
    )


def sums_writer(inputs: MergeInputs, header: SumsHeader, out: str | Path) -> SafetensorsWriter:
    """The writer of a sums file (the base's floating tensors as float64, ``header`` in
    its metadata): neither hashed nor fsynced, as a sums file is checked and rebuilt."""
    layout = [
        (t.name, "F64", t.shape)
        for t in inputs.base.header.tensors.values()
        if t.name in inputs.floating
    ]
    metadata = {
        FORMAT_KEY: SUMS_FORMAT,
        SPEC_KEY: inputs.base.metadata.get(SPEC_KEY, "{}"),
        SUMS_KEY: header.model_dump_json(),
    }
    return SafetensorsWriter(out, layout, metadata, hashed=False, durable=False)
