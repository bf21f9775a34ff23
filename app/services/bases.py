"""Base models: registration from an uploaded model file, lookup, the current generation."""

from __future__ import annotations

from typing import Any

import torch
from safetensors import safe_open
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.errors import InvalidInput, NotFound
from app.models import BaseModelRecord
from app.security import Actor
from app.services import audit
from app.services.staging import Staged, read_header_length
from app.storage import BlobStore
from medvec.models import ModelSpec, build_model, read_model_provenance, read_model_spec

CURRENT = "current"


def inspect_model_file(staged: Staged, max_header_bytes: int) -> tuple[ModelSpec, dict[str, Any]]:
    """The spec and provenance of a MedVec model file, after checking its tensors' names and
    shapes against the architecture the spec names (header only: no weights are loaded)."""
    header = read_header_length(staged.path)
    if not 0 < header <= min(max_header_bytes, staged.size - 8):
        raise InvalidInput(
            f"not a safetensors model file: header length {header} is out of range",
            hint="upload a file written by medvec.models.save_model_file",
        )
    spec = read_model_spec(staged.path)
    provenance = read_model_provenance(staged.path)
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in build_model(spec).state_dict().items()}
    with safe_open(str(staged.path), framework="pt") as handle:
        got = {k: tuple(handle.get_slice(k).get_shape()) for k in handle.keys()}  # noqa: SIM118
    wrong = sorted(k for k in expected.keys() | got.keys() if expected.get(k) != got.get(k))
    if wrong:
        raise InvalidInput(
            f"the weights do not match {spec.arch} as the file's spec describes it: "
            f"{len(wrong)} tensors differ, first {wrong[0]!r} "
            f"(expected {expected.get(wrong[0])}, got {got.get(wrong[0])})",
            hint="export the model with medvec.models.save_model_file and its own spec",
            tensors=wrong[:20],
        )
    return spec, provenance


def register_base(
    session: Session,
    store: BlobStore,
    actor: Actor,
    *,
    name: str,
    staged: Staged,
    max_header_bytes: int,
) -> tuple[BaseModelRecord, bool]:
    """Register an uploaded model file as a base; the same bytes again return the same base."""
    existing = session.scalar(
        select(BaseModelRecord).where(BaseModelRecord.sha256 == staged.sha256)
    )
    if existing is not None:
        staged.discard()
        return existing, False
    try:
        spec, provenance = inspect_model_file(staged, max_header_bytes)
    except BaseException:
        staged.discard()
        raise
    store.commit(staged.path, staged.sha256)
    base = BaseModelRecord(
        name=name,
        arch=spec.arch,
        spec=spec.model_dump(),
        provenance=provenance,
        sha256=staged.sha256,
        size=staged.size,
        generation=0,
    )
    session.add(base)
    session.flush()
    audit.record(
        session,
        actor,
        "base.registered",
        target_type="base",
        target_id=base.id,
        name=name,
        sha256=base.sha256,
        arch=base.arch,
    )
    return base, True


def list_bases(session: Session) -> list[BaseModelRecord]:
    query = select(BaseModelRecord).order_by(
        BaseModelRecord.generation.desc(), BaseModelRecord.created_at.desc()
    )
    return list(session.scalars(query))


def current_base(session: Session) -> BaseModelRecord:
    query = select(BaseModelRecord).order_by(
        BaseModelRecord.generation.desc(), BaseModelRecord.created_at.desc(), BaseModelRecord.id
    )
    base = session.scalars(query.limit(1)).first()
    if base is None:
        raise NotFound(
            "no base model is registered yet", hint="an admin registers one with POST /api/v1/bases"
        )
    return base


def get_base(session: Session, base_id: str) -> BaseModelRecord:
    if base_id == CURRENT:
        return current_base(session)
    base = session.get(BaseModelRecord, base_id)
    if base is None:
        raise NotFound(f"no base {base_id}", hint="list them with GET /api/v1/bases")
    return base


def find_base(session: Session, reference: str) -> BaseModelRecord | None:
    """A base by registry id, or by sha256 (what an offline-made vector records)."""
    base = session.get(BaseModelRecord, reference)
    if base is None and len(reference) == 64:
        base = session.scalar(select(BaseModelRecord).where(BaseModelRecord.sha256 == reference))
    return base
