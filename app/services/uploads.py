"""Resumable upload sessions: create or resume, append a part at an offset, complete.

The bytes of a session live in one part file in the blob store's staging area; its
length is the authoritative offset (the row's ``offset`` mirrors it), so bytes that
arrived before a connection broke count and are never asked for again. Sessions
expire ``upload_expiry`` after their last activity; the sweeper deletes their bytes.
"""

from __future__ import annotations

import fcntl
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db import utcnow
from app.errors import (
    Conflict,
    Gone,
    InvalidInput,
    NotFound,
    OffsetMismatch,
    PayloadTooLarge,
    ShaMismatch,
)
from app.models import DataVector, UploadSession, UploadStatus
from app.security import Actor
from app.services import audit, vectors
from app.services.staging import Staged, too_large
from app.storage import BlobStore, HashingWriter, sha256_of


@dataclass(frozen=True)
class UploadLimits:
    max_bytes: int
    expiry: timedelta
    max_norm: float | None
    max_header_bytes: int


def part_name(upload_id: str) -> str:
    """The staging file name of an upload session's bytes (the sweeper spares open ones)."""
    return f"upload-{upload_id}.part"


def part_path(store: BlobStore, upload: UploadSession) -> Path:
    return store.staging_path(part_name(upload.id))


def held_bytes(store: BlobStore, upload: UploadSession) -> int:
    """How many bytes of ``upload`` the server holds (the part file's length)."""
    if upload.status is UploadStatus.COMPLETED:
        return upload.size
    try:
        return part_path(store, upload).stat().st_size
    except FileNotFoundError:
        return 0


def _check_sha(sha256: str) -> str:
    sha256 = sha256.lower()
    if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
        raise InvalidInput(f"{sha256!r} is not a hex sha256", hint="send 64 hex characters")
    return sha256


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
    sha256 = _check_sha(sha256)
    if size <= 0:
        raise InvalidInput("size must be positive", hint="send the file's size in bytes")
    if size > limits.max_bytes:
        raise too_large(limits.max_bytes, "the file")
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
    part_path(store, upload).touch()
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
    if upload.status is UploadStatus.EXPIRED or (
        upload.status is UploadStatus.OPEN and upload.expires_at <= utcnow()
    ):
        raise Gone(
            f"upload {upload_id} expired and its bytes were discarded",
            hint="start again with POST /api/v1/uploads (`medvec push` does this itself)",
        )
    upload.offset = held_bytes(store, upload)
    return upload


class PartWriter:
    """Exclusive appender to a session's part file, opened at the offset the client named."""

    def __init__(self, store: BlobStore, upload: UploadSession, offset: int) -> None:
        if upload.status is not UploadStatus.OPEN:
            raise Conflict(
                f"upload {upload.id} is already complete",
                hint="nothing more to send",
                vector_id=upload.vector_id,
            )
        self.limit = upload.size
        # no digest here: parts may arrive over several requests and processes, so the
        # whole file is hashed once at completion instead
        self.writer = HashingWriter(part_path(store, upload), append=True, digest=False)
        try:
            fcntl.flock(self.writer.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.writer.close()
            raise Conflict(
                f"another part of upload {upload.id} is being written",
                hint="send parts one at a time",
            ) from None
        self.start = self.writer.size
        if offset != self.start:
            self.writer.close()
            raise OffsetMismatch(
                f"the server holds {self.start} bytes of this upload, not {offset}",
                hint=f"resume at offset {self.start}",
                offset=self.start,
            )

    def overflow(self) -> PayloadTooLarge:
        return PayloadTooLarge(
            f"the part goes past the upload's declared size of {self.limit} bytes",
            hint=f"send at most {self.limit - self.start} bytes from offset {self.start}",
            offset=self.start,
            size=self.limit,
        )

    def check_declared(self, length: int | None) -> None:
        if length is not None and self.start + length > self.limit:
            self.writer.close()
            raise self.overflow()

    def rewind(self) -> None:
        """Drop what this part wrote (used when the part was refused)."""
        self.writer.close()
        with self.writer.path.open("r+b") as handle:
            handle.truncate(self.start)

    def close(self) -> int:
        self.writer.close()
        return self.writer.size


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
    path = part_path(store, upload)
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        handle = None
    try:
        if handle is not None:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)  # released when the handle closes
            if not path.exists():  # a concurrent completion moved the bytes meanwhile
                raise Conflict(
                    f"upload {upload_id} was just completed by another request",
                    hint="send the completion again to get the vector",
                )
        return _complete_locked(session, store, actor, upload, path, limits)
    finally:
        if handle is not None:
            handle.close()


def _complete_locked(
    session: Session,
    store: BlobStore,
    actor: Actor,
    upload: UploadSession,
    path: Path,
    limits: UploadLimits,
) -> tuple[DataVector, bool]:
    if upload.offset != upload.size:
        raise Conflict(
            f"upload {upload.id} is incomplete: the server holds {upload.offset} of "
            f"{upload.size} bytes",
            hint=f"send the rest from offset {upload.offset}",
            offset=upload.offset,
        )
    actual = sha256_of(path)
    if actual != upload.sha256:
        path.unlink(missing_ok=True)
        raise ShaMismatch(
            f"the bytes received hash to {actual}, not the declared {upload.sha256}",
            hint="the file changed or was corrupted in transit; the upload was reset, push again",
            expected=upload.sha256,
            got=actual,
        )
    staged = Staged(path, actual, upload.size)
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
        part_path(store, upload).unlink(missing_ok=True)
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
