"""``summarize_vector``: what a vector file holds, for people (``medvec vector inspect``)."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from pydantic import BaseModel, ConfigDict

from medvec.vectors.header import DEFAULT_MAX_HEADER_BYTES
from medvec.vectors.io import metadata_from_header
from medvec.vectors.lazy import LazyTensorReader
from medvec.vectors.metadata import VectorMetadata

__all__ = ["VectorSummary", "summarize_vector"]


class VectorSummary(BaseModel):
    """Metadata and value statistics of a vector file; non-finite values are counted."""

    model_config = ConfigDict(frozen=True)

    metadata: VectorMetadata
    num_tensors: int
    num_parameters: int
    l2_norm: float
    max_abs: float
    non_finite: int
    dtypes: dict[str, int]
    file_size: int


def summarize_vector(
    path: str | Path, *, max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES
) -> VectorSummary:
    """Read a vector one tensor at a time and summarise it (L2 norm over finite values)."""
    path = Path(path)
    sum_sq, max_abs, count, bad = 0.0, 0.0, 0, 0
    dtypes: dict[str, int] = {}
    with LazyTensorReader(path, max_header_bytes=max_header_bytes) as reader:
        metadata = metadata_from_header(reader.header, path)
        for name in reader.keys():
            info = reader.info(name)
            dtypes[info.dtype_name] = dtypes.get(info.dtype_name, 0) + 1
            tensor = reader.read(name).to(torch.float64)
            finite = torch.isfinite(tensor)
            bad += int((~finite).sum())
            values = tensor[finite]
            if values.numel():
                sum_sq += float(values.square().sum())
                max_abs = max(max_abs, float(values.abs().max()))
            count += tensor.numel()
        return VectorSummary(
            metadata=metadata,
            num_tensors=len(reader.keys()),
            num_parameters=count,
            l2_norm=math.sqrt(sum_sq),
            max_abs=max_abs,
            non_finite=bad,
            dtypes=dtypes,
            file_size=reader.header.file_size,
        )
