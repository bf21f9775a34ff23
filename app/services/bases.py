"""Base models: registration from an uploaded model file, lookup, the current generation."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.jobs import defer_job
from app.models import BaseModelRecord, BaseStatus
from app.security import Actor
from app.services import audit
from app.services.errors import BaseNotReady, BaseRejected, InvalidInput, NotFound
from app.services.generations import current_base
from app.services.staging import Staged, read_header_length
from app.storage import BlobStore
from app.tasks import BaseVerify
from medvec.models.header import provenance_of, read_model_header, spec_of
from medvec.models.spec import ModelSpec

CURRENT = "current"

#: the worker task that checks a base's tensors against the architecture its spec names


def inspect_model_file(staged: Staged, max_header_bytes: int) -> tuple[ModelSpec, dict[str, Any]]:
    """The spec and provenance of a MedVec model file, from its header alone.

    The header's layout is checked (bounded size, dtypes, offsets that tile the file);
    whether the tensors build the architecture is a worker's check (``app.tasks.BaseVerify``).
    """
    header = read_header_length(staged.path)
    if not 0 < header <= min(max_header_bytes, staged.size - 8):
        raise InvalidInput(
            f"not a safetensors model file: header length {header} is out of range",
            hint="upload a file written by medvec.models.save_model_file",
        )
    parsed = read_model_header(staged.path, max_header_bytes)
    return spec_of(parsed, staged.path), provenance_of(parsed, staged.path)


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
        status=BaseStatus.VERIFYING,
    )
    session.add(base)
    session.flush()
    defer_job(session, BaseVerify(base_id=base.id))
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


def require_ready(base: BaseModelRecord) -> None:
    """Refuse work against a base the worker has not (or not successfully) verified."""
    if base.status is BaseStatus.VERIFYING:
        raise BaseNotReady(
            f"base {base.id} is still being verified by a worker",
            hint="retry in a moment; GET /api/v1/bases/{id} shows status 'ready' once it passes",
            base_id=base.id,
        )
    if base.status is BaseStatus.REJECTED:
        raise BaseRejected(
            f"base {base.id} failed verification: {base.reason}",
            hint="register a model file whose weights fit the architecture its spec names",
            base_id=base.id,
            reason=base.reason,
        )


def unverified_bases(session: Session, registered_before: datetime | None = None) -> list[str]:
    """Ids of the bases still waiting for verification, registered before a time if given
    (the sweeper re-sends their task: it may have been lost between commit and send)."""
    query = select(BaseModelRecord.id).where(BaseModelRecord.status == BaseStatus.VERIFYING)
    if registered_before is not None:
        query = query.where(BaseModelRecord.created_at < registered_before)
    return list(session.scalars(query))
