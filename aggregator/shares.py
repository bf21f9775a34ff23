"""Receiving share B files: resumable upload sessions (the registry's protocol), then
checks and registration under the pair id.

The paths and bodies are those of the registry's ``/uploads`` endpoints, so the
hospital's resumable uploader talks to both servers alike; the protocol's rules are the
registry's own (:mod:`app.services.upload_parts`), the sessions live in this server's
``agg_uploads`` table.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from aggregator import audit
from aggregator.auth import AggActor
from aggregator.models import AggShare, AggUpload, UploadStatus
from app.db import utcnow
from app.services.errors import Conflict, InvalidInput, NotFound
from app.services.upload_parts import (
    check_complete,
    check_new_upload,
    check_not_expired,
    verify_assembled,
)
from app.storage import BlobStore
from medvec.errors import MedVecError
from medvec.secure.shares import read_share_info


def find_share(session: Session, owner: str, sha256: str) -> AggShare | None:
    return session.scalar(
        select(AggShare).where(AggShare.hospital == owner, AggShare.sha256 == sha256)
    )


def open_upload(
    session: Session,
    store: BlobStore,
    actor: AggActor,
    *,
    sha256: str,
    size: int,
    max_bytes: int,
    expiry: timedelta,
) -> AggUpload:
    """Start a session, resume the open one, or answer a completed one for known bytes."""
    sha256 = check_new_upload(sha256, size, max_bytes)
    known = find_share(session, actor.name, sha256)
    now = utcnow()
    if known is not None:
        upload = AggUpload(
            owner=actor.name,
            sha256=sha256,
            size=size,
            offset=size,
            status=UploadStatus.COMPLETED,
            expires_at=now,
            share_id=known.id,
        )
        session.add(upload)
        session.flush()
        return upload
    query = select(AggUpload).where(
        AggUpload.owner == actor.name,
        AggUpload.sha256 == sha256,
        AggUpload.size == size,
        AggUpload.status == UploadStatus.OPEN,
        AggUpload.expires_at > now,
    )
    resumed = session.scalars(query.order_by(AggUpload.created_at.desc()).limit(1)).first()
    if resumed is not None:
        resumed.offset = store.uploads.held(resumed.id)
        resumed.expires_at = now + expiry
        session.flush()
        return resumed
    upload = AggUpload(
        owner=actor.name,
        sha256=sha256,
        size=size,
        offset=0,
        status=UploadStatus.OPEN,
        expires_at=now + expiry,
    )
    session.add(upload)
    session.flush()
    store.uploads.begin(upload.id)
    audit.record(session, actor, "upload.started", upload.id, sha256=sha256, size=size)
    return upload


def get_upload(session: Session, store: BlobStore, actor: AggActor, upload_id: str) -> AggUpload:
    upload = session.get(AggUpload, upload_id)
    if upload is None or upload.owner != actor.name:
        raise NotFound(f"no upload {upload_id}", hint="start one with POST /api/v1/uploads")
    check_not_expired(upload, utcnow())
    if upload.status is UploadStatus.OPEN:
        upload.offset = store.uploads.held(upload.id)
    return upload


def complete_upload(
    session: Session, store: BlobStore, actor: AggActor, upload_id: str, max_header_bytes: int
) -> tuple[AggShare, bool]:
    """Verify the bytes, check they are a share B of this hospital, and register it."""
    session.get(AggUpload, upload_id, with_for_update=True)
    upload = get_upload(session, store, actor, upload_id)
    if upload.status is UploadStatus.COMPLETED and upload.share_id:
        share = session.get(AggShare, upload.share_id)
        assert share is not None
        return share, False
    check_complete(upload)
    with store.uploads.assembled(upload.id) as path:
        verify_assembled(store, upload, path, upload.sha256)
        share, created = _register(session, store, actor, path, upload, max_header_bytes)
    upload.status = UploadStatus.COMPLETED
    upload.share_id = share.id
    session.flush()
    return share, created


def _register(
    session: Session,
    store: BlobStore,
    actor: AggActor,
    path: Path,
    upload: AggUpload,
    max_header_bytes: int,
) -> tuple[AggShare, bool]:
    try:
        info = read_share_info(path, max_header_bytes=max_header_bytes)
    except MedVecError as exc:
        store.uploads.discard(upload.id)
        raise InvalidInput(exc.message, hint=exc.hint) from exc
    problems = []
    if info.role != "B":
        problems.append(f"this is share {info.role}; the share holder takes share B")
    if info.hospital != actor.name:
        problems.append(f"the share says hospital {info.hospital!r}, the token {actor.name!r}")
    if problems:
        store.uploads.discard(upload.id)
        raise InvalidInput("; ".join(problems), hint="push with `medvec push --secure`")
    existing = session.scalar(select(AggShare).where(AggShare.pair_id == info.pair_id))
    if existing is not None:
        if existing.sha256 == upload.sha256:
            return existing, False
        store.uploads.discard(upload.id)
        raise Conflict(
            f"pair {info.pair_id} already has another share B",
            hint="split the vector again (a new pair id) and push both shares",
        )
    share = AggShare(
        pair_id=info.pair_id,
        hospital=actor.name,
        base_sha256=info.base_sha256,
        sha256=upload.sha256,
        size=upload.size,
    )
    session.add(share)
    session.flush()
    store.commit(path, upload.sha256)
    audit.record(session, actor, "share.stored", share.id, pair_id=info.pair_id)
    return share, True


def get_share(session: Session, actor: AggActor, share_id: str) -> AggShare:
    share = session.get(AggShare, share_id)
    if share is None or share.hospital != actor.name:
        raise NotFound(f"no share {share_id}")
    return share


def expire_uploads(session: Session, store: BlobStore) -> int:
    """Expire open uploads idle past their expiry and delete their bytes; returns how many."""
    query = (
        select(AggUpload)
        .where(AggUpload.status == UploadStatus.OPEN, AggUpload.expires_at <= utcnow())
        .with_for_update(skip_locked=True)
    )
    count = 0
    for upload in session.scalars(query):
        store.uploads.discard(upload.id)
        upload.status = UploadStatus.EXPIRED
        count += 1
    session.flush()
    return count
