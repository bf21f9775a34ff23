"""What a model file's header says (format, spec, provenance), read without torch.

The registry registers bases from these alone; rebuilding the architecture to check
the tensors against it (``medvec.models.files.check_shapes``) is a worker's job.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from medvec.errors import MedVecError, ModelError
from medvec.models.spec import FORMAT_KEY, MODEL_FORMAT, PROVENANCE_KEY, SPEC_KEY, ModelSpec
from medvec.vectors.header import (
    DEFAULT_MAX_HEADER_BYTES,
    SafetensorsHeader,
    read_safetensors_header,
)

__all__ = [
    "provenance_of",
    "read_model_header",
    "read_model_provenance",
    "read_model_spec",
    "spec_of",
]


def read_model_header(
    path: str | Path, max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES
) -> SafetensorsHeader:
    """The parsed header of a MedVec model file; ``ModelError`` for anything else."""
    path = Path(path)
    hint = "give a model file written by save_model_file (a base or a merged version)"
    if not path.is_file():
        raise ModelError(f"model file {path} does not exist", hint=hint, path=str(path))
    try:
        header = read_safetensors_header(path, max_header_bytes)
    except MedVecError as exc:
        raise ModelError(
            f"{path} is not a safetensors file: {exc.message}", hint=hint, path=str(path)
        ) from exc
    kind = header.metadata.get(FORMAT_KEY)
    if kind != MODEL_FORMAT:
        if kind == "vector":
            hint = "this is a data vector; read it with medvec.vectors.load_vector"
        raise ModelError(
            f"{path} is not a MedVec model file ({FORMAT_KEY}={kind!r})",
            hint=hint,
            path=str(path),
        )
    return header


def spec_of(header: SafetensorsHeader, path: Path) -> ModelSpec:
    """The ``ModelSpec`` a model file's parsed header carries."""
    try:
        return ModelSpec.model_validate_json(header.metadata.get(SPEC_KEY) or "")
    except ValidationError as exc:
        raise ModelError(
            f"{path} has no valid {SPEC_KEY} header: {exc.errors()[0]['msg']}",
            hint="re-export the model with save_model_file",
            path=str(path),
        ) from exc


def provenance_of(header: SafetensorsHeader, path: Path) -> dict[str, Any]:
    """The free-form provenance (``medvec.model``) a model file's parsed header carries."""
    try:
        value = json.loads(header.metadata.get(PROVENANCE_KEY) or "{}")
    except json.JSONDecodeError as exc:
        raise ModelError(
            f"{path} has a malformed {PROVENANCE_KEY} header", hint="re-export the model"
        ) from exc
    return value if isinstance(value, dict) else {"value": value}


def read_model_spec(path: str | Path) -> ModelSpec:
    """The ``ModelSpec`` of a model file, read from its header only."""
    return spec_of(read_model_header(path), Path(path))


def read_model_provenance(path: str | Path) -> dict[str, Any]:
    """The free-form provenance (``medvec.model``) of a model file, from its header."""
    return provenance_of(read_model_header(path), Path(path))
