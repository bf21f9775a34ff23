"""Data vector files: safetensors with ``VectorMetadata`` in the header.

Header metadata of a vector file (``docs/architecture.md``)::

    medvec.format = "vector"
    medvec.spec   = ModelSpec JSON (when the metadata carries one)
    medvec.vector = VectorMetadata JSON
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError

from medvec.models.spec import FORMAT_KEY, SPEC_KEY
from medvec.vectors.errors import NotAVectorError
from medvec.vectors.header import (
    DEFAULT_MAX_HEADER_BYTES,
    SafetensorsHeader,
    read_safetensors_header,
)
from medvec.vectors.metadata import VectorMetadata

if TYPE_CHECKING:  # reading metadata needs no torch (the registry never loads it)
    from torch import Tensor

__all__ = [
    "VECTOR_FORMAT",
    "VECTOR_KEY",
    "load_vector",
    "metadata_from_header",
    "read_vector_metadata",
    "save_vector",
]

VECTOR_FORMAT = "vector"
VECTOR_KEY = "medvec.vector"


def save_vector(path: str | Path, tensors: Mapping[str, Tensor], metadata: VectorMetadata) -> Path:
    """Write a vector file atomically (temporary name, fsync, rename); return its path."""
    from medvec.vectors.writer import SafetensorsWriter

    path = Path(path)
    header = {FORMAT_KEY: VECTOR_FORMAT, VECTOR_KEY: metadata.model_dump_json()}
    if metadata.spec is not None:
        header[SPEC_KEY] = metadata.spec.model_dump_json()
    items = [(name, t.detach().cpu().contiguous()) for name, t in tensors.items()]
    layout = [(name, t.dtype, tuple(t.shape)) for name, t in items]
    with SafetensorsWriter(path, layout, header) as writer:
        for name, tensor in items:
            writer.write(name, tensor)
        writer.commit()
    return path


def metadata_from_header(header: SafetensorsHeader, path: Path) -> VectorMetadata:
    """The ``VectorMetadata`` of a parsed header; ``NotAVectorError`` when it is not a vector."""
    kind = header.metadata.get(FORMAT_KEY)
    if kind != VECTOR_FORMAT:
        hint = "give a data vector written by `medvec vector create` or `medvec train`"
        if kind == "model":
            hint = "this is a model file; compute a vector with `medvec vector create`"
        raise NotAVectorError(
            f"{path.name} is not a MedVec data vector ({FORMAT_KEY}={kind!r})",
            hint=hint,
            path=str(path),
        )
    try:
        return VectorMetadata.model_validate_json(header.metadata.get(VECTOR_KEY) or "")
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or VECTOR_KEY
        raise NotAVectorError(
            f"{path.name} has invalid {VECTOR_KEY} metadata: {where}: {err['msg']}",
            hint="write the vector again with medvec; its metadata must follow VectorMetadata",
            path=str(path),
        ) from exc


def read_vector_metadata(
    path: str | Path, *, max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES
) -> VectorMetadata:
    """The metadata of a vector file, read from its header only."""
    path = Path(path)
    return metadata_from_header(read_safetensors_header(path, max_header_bytes), path)


def load_vector(
    path: str | Path, *, max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES
) -> tuple[dict[str, Tensor], VectorMetadata]:
    """All tensors of a vector file (copied, in file order) and its metadata."""
    from medvec.vectors.lazy import LazyTensorReader

    path = Path(path)
    with LazyTensorReader(path, max_header_bytes=max_header_bytes) as reader:
        metadata = metadata_from_header(reader.header, path)
        tensors = {name: reader.read(name, copy=True) for name in reader.keys()}
    return tensors, metadata
