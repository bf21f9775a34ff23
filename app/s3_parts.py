"""Resumable upload sessions on S3: one S3 multipart upload per session, at
``<prefix>uploads/<upload id>``; see :mod:`app.s3` for the whole design.

Each ``PUT /uploads/{id}`` part is spooled to local staging (the spool file is also the
session's lock on this machine) and sent as the session's next S3 part; the parts S3
lists are the offset, so any API replica continues a session and nothing is kept here.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.config import S3_MIN_PART
from app.parts import PartOffsetMismatch, PartsGone, PartSink, lock_exclusive, part_name
from app.writers import HashingWriter

if TYPE_CHECKING:
    from app.s3 import S3BlobStore

COPY_CHUNK = 1 << 20


class S3PartSink:
    """Spools one part to a local file, then sends it to S3 as the session's next part."""

    def __init__(self, parts: S3UploadParts, upload_id: str, offset: int, total: int) -> None:
        self.parts = parts
        self.upload_id = upload_id
        self.total = total
        self.dropped = 0
        # the spool file is also the session's lock on this machine
        self.writer = HashingWriter(
            parts.store.staging_path(part_name(upload_id)), append=True, digest=False
        )
        lock_exclusive(self.writer)
        try:
            self._empty()  # what a crashed part left is not part of the session
            self.multipart = parts.multipart_id(upload_id, create=True)
            self.listed = parts.list_parts(upload_id, self.multipart)
        except BaseException:
            self.writer.close()
            raise
        self.start = sum(size for _, _, size in self.listed)
        if offset != self.start:
            self.writer.close()
            raise PartOffsetMismatch(self.start)

    @property
    def size(self) -> int:
        return self.start + self.writer.size

    def write(self, chunk: bytes) -> None:
        self.writer.write(chunk)

    def _empty(self) -> None:
        if self.writer.closed:
            with self.writer.path.open("r+b") as handle:
                handle.truncate(0)
        else:
            os.ftruncate(self.writer.fileno(), 0)
        self.writer.size = 0

    def rewind(self) -> None:
        self._empty()

    def close(self) -> int:
        """Send the spooled bytes as the next S3 part (while still holding the lock), or
        drop them when S3 would refuse them; the spool is emptied either way."""
        spooled = self.writer.size
        try:
            if spooled == 0:
                return self.start
            if spooled < self.parts.min_part_size and self.start + spooled < self.total:
                self.dropped = spooled
                return self.start
            with self.writer.path.open("rb") as body:
                self.parts.store.client.upload_part(
                    Bucket=self.parts.store.bucket,
                    Key=self.parts.key(self.upload_id),
                    UploadId=self.multipart,
                    PartNumber=len(self.listed) + 1,
                    Body=body,
                    ContentLength=spooled,
                )
            return self.start + spooled
        finally:
            self._empty()
            self.writer.close()


class S3UploadParts:
    """Upload sessions as S3 multipart uploads, found again by their key (no state kept)."""

    min_part_size = S3_MIN_PART

    def __init__(self, store: S3BlobStore) -> None:
        self.store = store

    def key(self, upload_id: str) -> str:
        return f"{self.store.prefix}uploads/{upload_id}"

    def _multiparts(self, upload_id: str) -> list[dict[str, Any]]:
        key = self.key(upload_id)
        answer = self.store.client.list_multipart_uploads(Bucket=self.store.bucket, Prefix=key)
        found = [u for u in answer.get("Uploads", []) if u["Key"] == key]
        return sorted(found, key=lambda u: u["Initiated"])

    def multipart_id(self, upload_id: str, *, create: bool = False) -> str | None:
        """The session's multipart upload (the oldest, should two replicas race to begin)."""
        found = self._multiparts(upload_id)
        if found:
            return str(found[0]["UploadId"])
        if not create:
            return None
        answer = self.store.client.create_multipart_upload(
            Bucket=self.store.bucket, Key=self.key(upload_id)
        )
        return str(answer["UploadId"])

    def list_parts(self, upload_id: str, multipart: str | None) -> list[tuple[int, str, int]]:
        """(part number, ETag, size) of the parts S3 holds, in order."""
        if multipart is None:
            return []
        pages = self.store.client.get_paginator("list_parts").paginate(
            Bucket=self.store.bucket, Key=self.key(upload_id), UploadId=multipart
        )
        parts = [
            (int(p["PartNumber"]), str(p["ETag"]), int(p["Size"]))
            for page in pages
            for p in page.get("Parts", [])
        ]
        return sorted(parts)

    def begin(self, upload_id: str) -> None:
        self.multipart_id(upload_id, create=True)

    def held(self, upload_id: str) -> int:
        parts = self.list_parts(upload_id, self.multipart_id(upload_id))
        return sum(size for _, _, size in parts)

    def open_part(self, upload_id: str, offset: int, total: int) -> PartSink:
        return S3PartSink(self, upload_id, offset, total)

    @contextlib.contextmanager
    def assembled(self, upload_id: str) -> Iterator[Path]:
        lock = HashingWriter(
            self.store.staging_path(part_name(upload_id)), append=True, digest=False
        )
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)  # waits for a part being written here
        target = self.store.staging_path(f"upload-{upload_id}.assembled")
        try:
            self._complete(upload_id, target)
            yield target
        finally:
            target.unlink(missing_ok=True)
            lock.close()
            lock.path.unlink(missing_ok=True)

    def _complete(self, upload_id: str, target: Path) -> None:
        """Have S3 join the parts, copy the object into ``target``, delete the object."""
        client, bucket, key = self.store.client, self.store.bucket, self.key(upload_id)
        multipart = self.multipart_id(upload_id)
        if multipart is None:
            raise PartsGone
        parts = self.list_parts(upload_id, multipart)
        client.complete_multipart_upload(
            Bucket=bucket,
            Key=key,
            UploadId=multipart,
            MultipartUpload={"Parts": [{"PartNumber": n, "ETag": etag} for n, etag, _ in parts]},
        )
        try:
            with (
                target.open("wb") as out,
                contextlib.closing(client.get_object(Bucket=bucket, Key=key)["Body"]) as body,
            ):
                while chunk := body.read(COPY_CHUNK):
                    out.write(chunk)
        finally:
            client.delete_object(Bucket=bucket, Key=key)

    def discard(self, upload_id: str) -> None:
        client, bucket, key = self.store.client, self.store.bucket, self.key(upload_id)
        for multipart in self._multiparts(upload_id):
            with contextlib.suppress(Exception):
                client.abort_multipart_upload(
                    Bucket=bucket, Key=key, UploadId=multipart["UploadId"]
                )
        client.delete_object(Bucket=bucket, Key=key)
        self.store.staging_path(part_name(upload_id)).unlink(missing_ok=True)
