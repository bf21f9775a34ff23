"""Check a data vector against its base before anyone trusts it.

Order of checks, cheapest first, so that a hostile upload costs little: header
bound and layout, format and metadata, base identity (sha256, spec), tensor
names, shapes and dtypes against the base's floating-point tensors, then one
streaming pass over the values (finite, L2 norm). Each failure raises the error
class for its kind, naming the first offending tensor and what was expected.

Nothing here imports torch: headers are parsed by ``medvec.vectors.header`` and
values are checked by ``medvec.vectors.values`` on numpy, chunk by chunk, so the
registry validates uploads in flat memory without loading it.
"""

from __future__ import annotations

import math
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from medvec.hashing import sha256_file
from medvec.models.spec import FORMAT_KEY, MODEL_FORMAT, SPEC_KEY, ModelSpec
from medvec.vectors.errors import (
    BaseMismatchError,
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
from medvec.vectors.io import metadata_from_header
from medvec.vectors.metadata import VectorMetadata
from medvec.vectors.values import DEFAULT_CHUNK_BYTES, scan_tensors

__all__ = [
    "ValidationReport",
    "base_floating_tensors",
    "check_base_identity",
    "check_structure",
    "validate_vector",
]


class ValidationReport(BaseModel):
    """What validation measured on a vector that passed every check."""

    model_config = ConfigDict(frozen=True)

    metadata: VectorMetadata
    num_tensors: int
    num_parameters: int
    l2_norm: float
    max_abs: float
    header_bytes: int
    file_size: int


def base_floating_tensors(header: SafetensorsHeader, path: Path) -> dict[str, TensorInfo]:
    """The floating-point tensors of a model file's header: what a vector must hold."""
    if header.metadata.get(FORMAT_KEY) != MODEL_FORMAT:
        raise NotAVectorError(
            f"{path.name} is not a MedVec model file and cannot serve as a base",
            hint="give the base model file (medvec.format='model')",
            path=str(path),
        )
    return {k: t for k, t in header.tensors.items() if t.is_floating_point}


def check_base_identity(
    metadata: VectorMetadata, base_header: SafetensorsHeader, base_sha256: str
) -> None:
    if metadata.base_sha256 != base_sha256:
        raise BaseMismatchError(
            f"vector was computed against base sha256 {metadata.base_sha256[:12]}…, "
            f"the given base is {base_sha256[:12]}…",
            hint="pull the base the vector was trained on, or retrain on the current base",
            expected=base_sha256,
            got=metadata.base_sha256,
        )
    check_same_spec(metadata, base_header)


def check_same_spec(metadata: VectorMetadata, base_header: SafetensorsHeader) -> None:
    """The vector's model spec (architecture and config) is the base's, where both name one.

    A vector of an older generation of the same architecture passes: it may be applied
    to the newer base (a rebase)."""
    raw_spec = base_header.metadata.get(SPEC_KEY)
    if metadata.spec is None or raw_spec is None:
        return
    try:
        base_spec = ModelSpec.model_validate_json(raw_spec)
    except ValidationError:
        return
    if base_spec != metadata.spec:
        raise BaseMismatchError(
            f"vector spec {metadata.spec.model_dump_json()} differs from the base's "
            f"{base_spec.model_dump_json()}",
            hint="the vector belongs to another architecture or config",
        )


def check_structure(expected: dict[str, TensorInfo], got: dict[str, TensorInfo]) -> None:
    missing = [k for k in expected if k not in got]
    extra = [k for k in got if k not in expected]
    if missing or extra:
        first = f"missing tensor {missing[0]!r}" if missing else f"unexpected tensor {extra[0]!r}"
        raise VectorKeysError(
            f"vector tensors differ from the base's floating-point tensors: {first} "
            f"({len(missing)} missing, {len(extra)} unexpected)",
            hint="compute the vector against this base with the same architecture",
            tensor=(missing or extra)[0],
            missing=missing[:20],
            unexpected=extra[:20],
        )
    for name, base in expected.items():
        vec = got[name]
        if vec.shape != base.shape:
            raise VectorShapeError(
                f"tensor {name!r} has shape {list(vec.shape)}, expected {list(base.shape)}",
                hint="the vector was computed for another architecture or number of classes",
                tensor=name,
                expected=list(base.shape),
                got=list(vec.shape),
            )
        if vec.dtype_name != base.dtype_name:
            raise VectorDtypeError(
                f"tensor {name!r} is {vec.dtype_name}, expected {base.dtype_name}",
                hint="keep the base's dtypes when computing the vector",
                tensor=name,
                expected=base.dtype_name,
                got=vec.dtype_name,
            )


def _scan_values(
    path: Path, header: SafetensorsHeader, max_norm: float | None, chunk_bytes: int
) -> tuple[float, float, int]:
    sum_sq, max_abs, count = 0.0, 0.0, 0
    for tensor in scan_tensors(path, header, chunk_bytes=chunk_bytes):
        if tensor.non_finite:
            raise NonFiniteError(
                f"tensor {tensor.name!r} holds {tensor.non_finite} NaN or infinite values, "
                "expected finite values",
                hint="training diverged; lower the learning rate or clip gradients",
                tensor=tensor.name,
                count=tensor.non_finite,
            )
        sum_sq += tensor.sum_squares
        max_abs = max(max_abs, tensor.max_abs)
        count += tensor.numel
    norm = math.sqrt(sum_sq)
    if max_norm is not None and norm > max_norm:
        raise NormBoundError(
            f"vector L2 norm {norm:.6g} exceeds the bound {max_norm:.6g}",
            hint="clip the vector (`medvec train --dp-clip`) or train with a lower learning rate",
            norm=norm,
            max_norm=max_norm,
        )
    return norm, max_abs, count


def validate_vector(
    vector_path: str | Path,
    base_path: str | Path,
    *,
    max_norm: float | None = None,
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
    base_sha256: str | None = None,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
) -> ValidationReport:
    """Validate a vector file against a base model file; return what was measured.

    ``base_sha256`` skips hashing the base when the caller already knows it (the
    registry stores it); ``chunk_bytes`` bounds the memory of the value pass. Raises a
    ``VectorValidationError`` subclass (or ``IncompatibleBaseError`` for another base) at
    the first failing check.
    """
    vector_path, base_path = Path(vector_path), Path(base_path)
    header = read_safetensors_header(vector_path, max_header_bytes)
    metadata = metadata_from_header(header, vector_path)
    base_header = read_safetensors_header(base_path)
    expected = base_floating_tensors(base_header, base_path)
    check_base_identity(metadata, base_header, base_sha256 or sha256_file(base_path))
    check_structure(expected, header.tensors)
    norm, max_abs, count = _scan_values(vector_path, header, max_norm, chunk_bytes)
    return ValidationReport(
        metadata=metadata,
        num_tensors=len(header.tensors),
        num_parameters=count,
        l2_norm=norm,
        max_abs=max_abs,
        header_bytes=header.header_bytes,
        file_size=header.file_size,
    )
