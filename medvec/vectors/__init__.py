"""Data vectors: ``tau = theta_finetuned - theta_base`` as safetensors files with metadata.

Compute and apply vectors, write and read them with typed metadata, validate them
against a base, and read any safetensors file one tensor at a time.

Reading headers and metadata and validating a vector need no torch (the registry
never loads it); the names that hand out tensors resolve lazily and import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from medvec.lazy import lazy_attributes
from medvec.vectors.errors import (
    BaseMismatchError,
    HeaderTooLargeError,
    MalformedFileError,
    NonFiniteError,
    NormBoundError,
    NotAVectorError,
    VectorDtypeError,
    VectorKeysError,
    VectorShapeError,
)
from medvec.vectors.header import (
    DEFAULT_MAX_HEADER_BYTES,
    SafetensorsHeader,
    TensorInfo,
    read_safetensors_header,
)
from medvec.vectors.io import (
    VECTOR_FORMAT,
    VECTOR_KEY,
    load_vector,
    read_vector_metadata,
    save_vector,
)
from medvec.vectors.metadata import VectorMetadata
from medvec.vectors.validate import ValidationReport, validate_vector

_LAZY: dict[str, str] = {
    "apply_vector": "medvec.vectors.compute",
    "compute_vector": "medvec.vectors.compute",
    "floating_keys": "medvec.vectors.compute",
    "is_running_stat": "medvec.vectors.names",
    "LazyTensorReader": "medvec.vectors.lazy",
    "VectorSummary": "medvec.vectors.summary",
    "summarize_vector": "medvec.vectors.summary",
    "SafetensorsWriter": "medvec.vectors.writer",
}

if TYPE_CHECKING:
    from medvec.vectors.compute import (
        apply_vector,
        compute_vector,
        floating_keys,
        is_running_stat,
    )
    from medvec.vectors.lazy import LazyTensorReader
    from medvec.vectors.summary import VectorSummary, summarize_vector
    from medvec.vectors.writer import SafetensorsWriter

__all__ = [
    "DEFAULT_MAX_HEADER_BYTES",
    "VECTOR_FORMAT",
    "VECTOR_KEY",
    "BaseMismatchError",
    "HeaderTooLargeError",
    "LazyTensorReader",
    "MalformedFileError",
    "NonFiniteError",
    "NormBoundError",
    "NotAVectorError",
    "SafetensorsHeader",
    "SafetensorsWriter",
    "TensorInfo",
    "ValidationReport",
    "VectorDtypeError",
    "VectorKeysError",
    "VectorMetadata",
    "VectorShapeError",
    "VectorSummary",
    "apply_vector",
    "compute_vector",
    "floating_keys",
    "is_running_stat",
    "load_vector",
    "read_safetensors_header",
    "read_vector_metadata",
    "save_vector",
    "summarize_vector",
    "validate_vector",
]


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, __all__)
