"""The resumable upload protocol's rules, shared by the registry and the share holder.

Both servers take files with the same ``/uploads`` protocol (create or resume a session
for a sha256 and size, append parts at offsets, complete), so that the hospital's
uploader talks to both alike; each keeps its sessions in its own table and decides for
itself what a completed file becomes (a vector or share A at the registry, share B at
the share holder). What they share is here: argument checks, expiry, the exclusive
writer of one part, and the check of the assembled bytes.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Protocol

from app.parts import PartBusy, PartOffsetMismatch, PartSink
from app.services.errors import (
    Conflict,
    Gone,
    InvalidInput,
    OffsetMismatch,
    PartTooSmall,
    PayloadTooLarge,
    ShaMismatch,
)
from app.services.staging import too_large
from app.storage import BlobStore
from medvec.hashing import sha256_file

__all__ = [
    "PartWriter",
    "Upload",
    "check_complete",
    "check_new_upload",
    "check_not_expired",
    "verify_assembled",
]


class Upload(Protocol):
    """What the protocol needs of a server's upload session row."""

    id: str
    size: int
    offset: int
    expires_at: datetime

    @property
    def status(self) -> str: ...


def check_new_upload(sha256: str, size: int, max_bytes: int) -> str:
    """The lower-case sha256 of a new session, once the declared size fits ``max_bytes``."""
    sha256 = sha256.lower()
    if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
        raise InvalidInput(f"{sha256!r} is not a hex sha256", hint="send 64 hex characters")
    if size <= 0:
        raise InvalidInput("size must be positive", hint="send the file's size in bytes")
    if size > max_bytes:
        raise too_large(max_bytes, "the file")
    return sha256


def check_not_expired(upload: Upload, now: datetime) -> None:
    """410 once the session expired (its bytes are, or are about to be, discarded)."""
    if upload.status == "expired" or (upload.status == "open" and upload.expires_at <= now):
        raise Gone(
            f"upload {upload.id} expired and its bytes were discarded",
            hint="start again with POST /api/v1/uploads (`medvec push` does this itself)",
        )


def verify_assembled(store: BlobStore, upload: Upload, path: Path, expected: str) -> str:
    """The sha256 of the assembled bytes; a mismatch resets the upload (422)."""
    actual = sha256_file(path)
    if actual != expected:
        store.uploads.discard(upload.id)
        path.unlink(missing_ok=True)
        raise ShaMismatch(
            f"the bytes received hash to {actual}, not the declared {expected}",
            hint="the file changed or was corrupted in transit; the upload was reset, push again",
            expected=expected,
            got=actual,
        )
    return actual


def check_complete(upload: Upload) -> None:
    """409 unless the server holds every byte of the session."""
    if upload.offset != upload.size:
        raise Conflict(
            f"upload {upload.id} is incomplete: the server holds {upload.offset} of "
            f"{upload.size} bytes",
            hint=f"send the rest from offset {upload.offset}",
            offset=upload.offset,
        )


class PartWriter:
    """Exclusive writer of one part of a session, opened at the offset the client named."""

    def __init__(self, store: BlobStore, upload: Upload, offset: int) -> None:
        if upload.status != "open":
            raise Conflict(f"upload {upload.id} is already complete", hint="nothing more to send")
        self.limit = upload.size
        self.min_part_size = store.uploads.min_part_size
        try:
            self.writer: PartSink = store.uploads.open_part(upload.id, offset, upload.size)
        except PartBusy:
            raise Conflict(
                f"another part of upload {upload.id} is being written",
                hint="send parts one at a time",
            ) from None
        except PartOffsetMismatch as exc:
            raise OffsetMismatch(
                f"the server holds {exc.held} bytes of this upload, not {offset}",
                hint=f"resume at offset {exc.held}",
                offset=exc.held,
            ) from None
        self.start = self.writer.start

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
        self.writer.rewind()

    def close(self) -> int:
        return self.writer.close()

    def too_small(self) -> PartTooSmall | None:
        """The error for a part the store dropped as under its minimum size, if it did."""
        if not self.writer.dropped:
            return None
        return PartTooSmall(
            f"a part that does not end the file must hold at least {self.min_part_size} "
            f"bytes; this one held {self.writer.dropped}",
            hint=f"send parts of {self.min_part_size} bytes or more from offset {self.start}",
            offset=self.start,
            min_part_size=self.min_part_size,
        )
