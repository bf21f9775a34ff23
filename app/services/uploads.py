"""Resumable upload sessions: create or resume, append a part at an offset, complete.

The bytes of a session are held by the blob store's :class:`~app.parts.UploadParts`
(a part file in the staging area, or an S3 multipart upload); what it holds is the
authoritative offset (the row's ``offset`` mirrors it), so bytes that arrived before a
connection broke count and are never asked for again (on S3: whole parts of at least
the store's minimum). Sessions expire ``upload_expiry`` after their last activity; the
sweeper deletes their bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db import utcnow
from app.models import DataVector, UploadSession, UploadStatus
from app.parts import PartsGone, part_name
from app.security import Actor
from app.services import audit, secure_shares, vectors
from app.services.errors import Conflict, NotFound
from app.services.staging import Staged
from app.services.upload_parts import (
    PartWriter,
    check_complete,
    check_new_upload,
    check_not_expired,
    verify_assembled,
)
from app.storage import BlobStore

__all__ = [
    "PartWriter",
    "UploadLimits",
    "complete_upload",
    "expire_uploads",
    "get_upload",
    "held_bytes",
    "open_upload",
    "part_name",
    "record_part",
]


@dataclass(frozen=True)
class UploadLimits:
    max_bytes: int
    expiry: timedelta
    max_norm: float | None
    max_header_bytes: int


def held_bytes(store: BlobStore, upload: UploadSession) -> int:
    """How many bytes of ``upload`` the server holds."""
    if upload.status is UploadStatus.COMPLETED:
        return upload.size
    return store.uploads.held(upload.id)


def open_upload(
    session: Session,
    store: BlobStore,
    actor: Actor,
    *,
    sha256: str,
    size: int,
    limits: UploadLimits,
) -> UploadSession:
    """Start a session for (sha256, size), or resume this hospital's open one.

    When these bytes already are a vector of this hospital, the answer is a completed
    session carrying ``vector_id``: nothing needs to be sent.
    """
    assert actor.hospital_id is not None
    sha256 = check_new_upload(sha256, size, limits.max_bytes)
    known = vectors.find_own(session, actor.hospital_id, sha256)
    if known is not None:
        return _completed_session(session, actor, known)
    now = utcnow()
    query = (
        select(UploadSession)
        .where(
            UploadSession.hospital_id == actor.hospital_id,
            UploadSession.sha256 == sha256,
            UploadSession.size == size,
            UploadSession.status == UploadStatus.OPEN,
            UploadSession.expires_at > now,
        )
        .order_by(UploadSession.created_at.desc())
    )
    upload = session.scalars(query.limit(1)).first()
    if upload is not None:
        upload.offset = held_bytes(store, upload)
        upload.expires_at = now + limits.expiry
        session.flush()
        return upload
    upload = UploadSession(
        hospital_id=actor.hospital_id,
        sha256=sha256,
        size=size,
        offset=0,
        status=UploadStatus.OPEN,
        expires_at=now + limits.expiry,
    )
    session.add(upload)
    session.flush()
    store.uploads.begin(upload.id)
    audit.record(
        session,
        actor,
        "upload.started",
        target_type="upload",
        target_id=upload.id,
        sha256=sha256,
        size=size,
    )
    return upload


def _completed_session(session: Session, actor: Actor, vector: DataVector) -> UploadSession:
    query = (
        select(UploadSession)
        .where(
            UploadSession.hospital_id == actor.hospital_id,
            UploadSession.vector_id == vector.id,
        )
        .order_by(UploadSession.created_at.desc())
    )
    upload = session.scalars(query.limit(1)).first()
    if upload is None:
        upload = UploadSession(
            hospital_id=actor.hospital_id,
            sha256=vector.sha256,
            size=vector.size,
            offset=vector.size,
            status=UploadStatus.COMPLETED,
            expires_at=utcnow(),
            vector_id=vector.id,
        )
        session.add(upload)
        session.flush()
    return upload


def get_upload(session: Session, store: BlobStore, actor: Actor, upload_id: str) -> UploadSession:
    """The caller's session; 404 for another hospital's, 410 once expired."""
    upload = session.get(UploadSession, upload_id)
    if upload is None or upload.hospital_id != actor.hospital_id:
        raise NotFound(f"no upload {upload_id}", hint="start one with POST /api/v1/uploads")
    check_not_expired(upload, utcnow())
    upload.offset = held_bytes(store, upload)
    return upload


def record_part(session: Session, upload: UploadSession, held: int, expiry: timedelta) -> None:
    upload.offset = held
    upload.expires_at = utcnow() + expiry
    session.flush()


def complete_upload(
    session: Session, store: BlobStore, actor: Actor, upload_id: str, limits: UploadLimits
) -> tuple[DataVector, bool]:
    """Verify the sha256 of the received bytes, then accept them as a vector.

    Concurrent completions of one session are serialised (the row is locked on
    PostgreSQL, the part file with ``flock`` everywhere): the first registers the vector,
    the others answer that same vector (200) or, when the first has not committed yet,
    409 ``conflict`` — never a half-done completion.
    """
    session.get(UploadSession, upload_id, with_for_update=True)  # waits for a running one
    upload = get_upload(session, store, actor, upload_id)
    if upload.status is UploadStatus.COMPLETED and upload.vector_id:
        vector = vectors.get_vector(session, actor, upload.vector_id)
        return vector, False
    check_complete(upload)
    try:
        with store.uploads.assembled(upload.id) as path:
            return _complete_locked(session, store, actor, upload, path, limits)
    except PartsGone:
        raise Conflict(
            f"upload {upload_id} was just completed by another request",
            hint="send the completion again to get the vector",
        ) from None


def _complete_locked(
    session: Session,
    store: BlobStore,
    actor: Actor,
    upload: UploadSession,
    path: Path,
    limits: UploadLimits,
) -> tuple[DataVector, bool]:
    actual = verify_assembled(store, upload, path, upload.sha256)
    staged = Staged(path, actual, upload.size)
    if secure_shares.is_share_file(path, max_header_bytes=limits.max_header_bytes):
        vector, created = secure_shares.accept_share(
            session, store, actor, staged, max_header_bytes=limits.max_header_bytes
        )
    else:
        vector, created = vectors.accept_vector(
            session,
            store,
            actor,
            staged,
            max_norm=limits.max_norm,
            max_header_bytes=limits.max_header_bytes,
        )
    upload.status = UploadStatus.COMPLETED
    upload.vector_id = vector.id
    upload.offset = upload.size
    session.flush()
    audit.record(
        session,
        actor,
        "upload.completed",
        target_type="upload",
        target_id=upload.id,
        vector_id=vector.id,
    )
    return vector, created


def expire_uploads(session: Session, store: BlobStore, now: datetime | None = None) -> int:
    """Expire open sessions idle past their expiry and delete their bytes; returns how many."""
    now = now or utcnow()
    query = (
        select(UploadSession)
        .where(UploadSession.status == UploadStatus.OPEN, UploadSession.expires_at <= now)
        .with_for_update(skip_locked=True)  # API processes sweeping at once skip each other
    )
    sweeper = Actor.system("upload-sweeper")
    count = 0
    for upload in session.scalars(query):
        store.uploads.discard(upload.id)
        upload.status = UploadStatus.EXPIRED
        audit.record(
            session,
            sweeper,
            "upload.expired",
            target_type="upload",
            target_id=upload.id,
            held=upload.offset,
            size=upload.size,
        )
        count += 1
    session.flush()
    return count
