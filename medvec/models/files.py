"""MedVec model files: a full state dict as safetensors, with the spec in its header.

Header metadata (see ``docs/architecture.md``, "File formats")::

    medvec.format = "model"
    medvec.spec   = {"arch", "num_classes", "in_channels", "image_size"}   (JSON)
    medvec.model  = free-form provenance                                    (JSON)

Files are written under a temporary name in the target directory and renamed into
place once complete, so a crash never leaves a half-written file under the real name.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Mapping
from itertools import chain
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from medvec.errors import ModelError
from medvec.models.header import read_model_provenance, read_model_spec
from medvec.models.registry import build_model
from medvec.models.spec import FORMAT_KEY, MODEL_FORMAT, PROVENANCE_KEY, SPEC_KEY, ModelSpec

__all__ = [
    "FORMAT_KEY",
    "MODEL_FORMAT",
    "PROVENANCE_KEY",
    "SPEC_KEY",
    "check_shapes",
    "load_model_file",
    "read_model_provenance",
    "read_model_spec",
    "save_model_file",
]


def _expected_shapes(spec: ModelSpec) -> dict[str, tuple[int, ...]]:
    """Key -> shape of the architecture ``spec`` names, built without allocating memory."""
    with torch.device("meta"):
        model = build_model(spec)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _check_state(state: Mapping[str, Tensor], spec: ModelSpec) -> None:
    check_shapes({k: tuple(v.shape) for k, v in state.items()}, spec)


def check_shapes(got: Mapping[str, tuple[int, ...]], spec: ModelSpec) -> None:
    """Raise ``ModelError`` unless tensor names and shapes are exactly ``spec``'s architecture's."""
    expected = _expected_shapes(spec)
    missing = sorted(set(expected) - set(got))
    extra = sorted(set(got) - set(expected))
    wrong = sorted(k for k in set(got) & set(expected) if got[k] != expected[k])
    if missing or extra or wrong:
        raise ModelError(
            f"state dict does not match {spec.arch} ({spec.model_dump_json()}): "
            f"{len(missing)} missing, {len(extra)} unexpected, {len(wrong)} wrong shape "
            f"(first: {(missing + extra + wrong)[:3]})",
            hint="pass the spec the model was built with",
            missing=missing[:20],
            unexpected=extra[:20],
            wrong_shape=wrong[:20],
        )


def save_model_file(
    path: str | Path,
    model_or_state: nn.Module | Mapping[str, Tensor],
    spec: ModelSpec,
    provenance: Mapping[str, Any] | None = None,
) -> Path:
    """Write the full state dict (buffers included) as a MedVec model file; return its path.

    Raises ``ModelError`` when the state dict does not fit ``spec``'s architecture.
    """
    path = Path(path)
    state = model_or_state.state_dict() if isinstance(model_or_state, nn.Module) else model_or_state
    _check_state(state, spec)
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}
    try:
        provenance_json = json.dumps(dict(provenance or {}), sort_keys=True)
    except TypeError as exc:
        raise ModelError(
            f"provenance is not JSON-serialisable: {exc}",
            hint="use strings, numbers, lists and dicts in provenance",
        ) from exc
    metadata = {
        FORMAT_KEY: MODEL_FORMAT,
        SPEC_KEY: spec.model_dump_json(),
        PROVENANCE_KEY: provenance_json,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        save_file(tensors, str(tmp), metadata=metadata)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load_model_file(
    path: str | Path, device: str | torch.device = "cpu"
) -> tuple[nn.Module, ModelSpec]:
    """Rebuild the model a model file describes and load its weights bit for bit."""
    path = Path(path)
    spec = read_model_spec(path)
    state = load_file(str(path), device=str(device))
    _check_state(state, spec)
    with torch.device("meta"):
        model = build_model(spec)
    # assign=True adopts the file's tensors (no random init, no copy); the meta
    # parameters of the freshly built model are replaced one for one.
    model.load_state_dict(state, strict=True, assign=True)
    tensors = chain(model.named_parameters(), model.named_buffers())
    leftover = [name for name, tensor in tensors if tensor.is_meta]
    if leftover:
        raise ModelError(
            f"{path} leaves tensors of {spec.arch} uninitialised: {leftover[:5]}",
            hint="re-export the model with save_model_file",
        )
    return model, spec
