"""Accepting data vectors: verify, validate against the base, register, supersede, audit.

Validation runs before anything is stored: a vector that fails any check leaves no row
and no blob behind (the client gets 422 with the reason), so status ``rejected`` is
never stored by the registry itself. Accepted vectors are stored as ``validated``.
The row (and what it supersedes) is written and flushed before the file moves into the
blob store, so a row the database refuses never leaves a blob without its row.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.db import utcnow
from app.jobs import defer_job
from app.models import BaseModelRecord, DataVector, Hospital, VectorStatus
from app.security import Actor
from app.services import audit, privacy
from app.services.bases import find_base, require_ready
from app.services.errors import HospitalMismatch, InvalidInput, NotFound, UnknownBase
from app.services.staging import Staged
from app.storage import BlobStore
from app.tasks import VectorAccepted
from medvec.vectors import ValidationReport, read_vector_metadata, validate_vector

#: a hospital's current vector for a base is in one of these; a new one supersedes it
CURRENT = (VectorStatus.VALIDATED, VectorStatus.QUARANTINED)

MAX_NUM_SAMPLES = 2**31 - 1
"""``num_samples`` is an INTEGER column: the largest value every database holds."""


def find_own(session: Session, hospital_id: str, sha256: str) -> DataVector | None:
    query = select(DataVector).where(
        DataVector.hospital_id == hospital_id, DataVector.sha256 == sha256
    )
    return session.scalar(query)


def _validate(
    session: Session,
    store: BlobStore,
    actor: Actor,
    staged: Staged,
    *,
    max_norm: float | None,
    max_header_bytes: int,
) -> tuple[BaseModelRecord, ValidationReport]:
    metadata = read_vector_metadata(staged.path, max_header_bytes=max_header_bytes)
    if metadata.hospital != actor.hospital_name:
        raise HospitalMismatch(
            f"the vector says it comes from hospital {metadata.hospital!r}, "
            f"the token belongs to {actor.hospital_name!r}",
            hint="push with your own hospital's token, or recompute the vector with the "
            "hospital name the registry knows (`medvec whoami`)",
        )
    if metadata.num_samples > MAX_NUM_SAMPLES:
        raise InvalidInput(
            f"the vector says it was trained on {metadata.num_samples} samples, over the "
            f"registry's bound of {MAX_NUM_SAMPLES}",
            hint="num_samples counts the training images; recompute the vector with the real count",
            num_samples=metadata.num_samples,
            max_num_samples=MAX_NUM_SAMPLES,
        )
    base = find_base(session, metadata.base_id)
    if base is None:
        raise UnknownBase(
            f"the vector's base {metadata.base_id!r} is not registered here",
            hint="pull the current base (`medvec base pull`) and train against it",
            base_id=metadata.base_id,
        )
    require_ready(base)
    report = validate_vector(
        staged.path,
        store.local_path(base.sha256),
        max_norm=max_norm,
        max_header_bytes=max_header_bytes,
        base_sha256=base.sha256,
    )
    return base, report


def accept_vector(
    session: Session,
    store: BlobStore,
    actor: Actor,
    staged: Staged,
    *,
    max_norm: float | None,
    max_header_bytes: int,
) -> tuple[DataVector, bool]:
    """Register the staged file as ``actor``'s vector; returns (vector, created).

    The same bytes from the same hospital return the existing vector (created False).
    The staged file is consumed: moved into the store, or deleted.
    """

    def build() -> DataVector:
        base, report = _validate(
            session, store, actor, staged, max_norm=max_norm, max_header_bytes=max_header_bytes
        )
        return DataVector(
            hospital_id=actor.hospital_id,
            base_id=base.id,
            sha256=staged.sha256,
            size=staged.size,
            norm=report.l2_norm,
            num_samples=report.metadata.num_samples,
            meta=report.metadata.model_dump(mode="json"),
            status=VectorStatus.VALIDATED,
        )

    def record(vector: DataVector) -> None:
        # under the lock, so concurrent pushes cannot each fit a budget they overspend together
        privacy.check_budget(session, vector.hospital_id, vector.meta)
        session.add(vector)
        session.flush()
        superseded = _supersede_previous(session, actor, vector)
        audit.record(
            session,
            actor,
            "vector.accepted",
            target_type="vector",
            target_id=vector.id,
            sha256=vector.sha256,
            base_id=vector.base_id,
            norm=vector.norm,
            supersedes=superseded,
        )
        session.flush()

    vector, created = register_staged(session, store, actor, staged, build, record)
    if created:
        defer_job(session, VectorAccepted(vector_id=vector.id))
    return vector, created


def register_staged(
    session: Session,
    store: BlobStore,
    actor: Actor,
    staged: Staged,
    build: Callable[[], DataVector],
    record: Callable[[DataVector], None],
) -> tuple[DataVector, bool]:
    """Register a staged upload as ``actor``'s row; returns (row, created).

    The same bytes from the same hospital return the existing row. ``build`` checks the
    file and makes the row (outside the hospital's lock: it reads the whole file);
    ``record`` adds it under the lock (supersede, audit), after a second look for the same
    bytes: a concurrent push of them may have committed meanwhile, and the answer is then
    that row (200), not 409. The staged file is consumed: moved into the store, or deleted.
    """
    assert actor.hospital_id is not None
    existing = find_own(session, actor.hospital_id, staged.sha256)
    if existing is not None:
        staged.discard()
        return existing, False
    try:
        row = build()
        _lock_hospital(session, actor.hospital_id)
        existing = find_own(session, actor.hospital_id, staged.sha256)
        if existing is not None:
            staged.discard()
            return existing, False
        record(row)
    except BaseException:
        staged.discard()
        raise
    store.commit(staged.path, staged.sha256)
    return row, True


def _lock_hospital(session: Session, hospital_id: str) -> None:
    """Serialise acceptances of one hospital's vectors until the transaction ends, so
    concurrent pushes cannot each see no current vector and all stay ``validated``, nor
    both insert the same bytes. ``FOR UPDATE`` on PostgreSQL; SQLite ignores it, so
    there a no-op write takes the database's write lock (waiting up to busy_timeout) and
    starts the transaction's snapshot after the previous writer committed."""
    if session.get_bind().dialect.name == "sqlite":
        session.execute(update(Hospital).where(Hospital.id == hospital_id).values(id=Hospital.id))
    else:
        session.execute(select(Hospital.id).where(Hospital.id == hospital_id).with_for_update())


def _supersede_previous(session: Session, actor: Actor, vector: DataVector) -> list[str]:
    """Mark the hospital's earlier current vectors for this base as superseded by ``vector``."""
    return supersede(session, actor, vector, CURRENT, VectorStatus.SUPERSEDED, "vector.superseded")


def supersede(
    session: Session,
    actor: Actor,
    vector: DataVector,
    current: tuple[VectorStatus, ...],
    superseded: VectorStatus,
    action: str,
) -> list[str]:
    """Move the hospital's other rows of ``vector``'s base in a ``current`` status to
    ``superseded`` (audited as ``action``); their ids."""
    query = select(DataVector).where(
        DataVector.hospital_id == vector.hospital_id,
        DataVector.base_id == vector.base_id,
        DataVector.status.in_(current),
        DataVector.id != vector.id,
    )
    now = utcnow()
    ids = []
    for previous in session.scalars(query):
        previous.status = superseded
        previous.superseded_by_id = vector.id
        previous.superseded_at = now
        ids.append(previous.id)
        audit.record(
            session,
            actor,
            action,
            target_type="vector",
            target_id=previous.id,
            superseded_by=vector.id,
        )
    session.flush()
    return ids


def list_vectors(
    session: Session,
    actor: Actor,
    *,
    base_id: str | None = None,
    status: VectorStatus | None = None,
    latest: bool | None = None,
    hospital_id: str | None = None,
) -> list[DataVector]:
    """Vectors ``actor`` may see: a hospital its own, an admin all (or one hospital's).

    ``latest`` keeps only each hospital's current vector per base (not superseded).
    """
    query = select(DataVector).order_by(DataVector.created_at.desc(), DataVector.id)
    if not actor.is_admin:
        query = query.where(DataVector.hospital_id == actor.hospital_id)
    elif hospital_id:
        query = query.where(DataVector.hospital_id == hospital_id)
    if base_id:
        query = query.where(DataVector.base_id == base_id)
    if status:
        query = query.where(DataVector.status == status)
    if latest:
        query = query.where(DataVector.status.in_(CURRENT))
    return list(session.scalars(query))


def get_vector(session: Session, actor: Actor, vector_id: str) -> DataVector:
    """A vector for its owner or an admin; anyone else gets the same 404 as for no vector."""
    vector = session.get(DataVector, vector_id)
    if vector is None or (not actor.is_admin and vector.hospital_id != actor.hospital_id):
        raise NotFound(f"no vector {vector_id}", hint="list yours with GET /api/v1/vectors")
    return vector
