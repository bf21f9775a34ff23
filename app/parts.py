"""Where the bytes of resumable upload sessions accumulate until the upload completes.

Every blob store holds its sessions' bytes in an :class:`UploadParts` (``store.uploads``):
:class:`LocalUploadParts`, one growing part file per session in the staging area, here;
``app.s3_parts.S3UploadParts``, an S3 multipart upload, for S3-compatible storage.
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from app.writers import HashingWriter

if TYPE_CHECKING:
    from app.storage import StagingArea

__all__ = [
    "LocalUploadParts",
    "PartBusy",
    "PartOffsetMismatch",
    "PartSink",
    "PartsGone",
    "UploadParts",
    "lock_exclusive",
    "part_name",
]


class PartBusy(Exception):
    """Another request is writing or completing this upload session's bytes."""


class PartOffsetMismatch(Exception):
    """The client's offset is not the number of bytes the store holds."""

    def __init__(self, held: int) -> None:
        super().__init__(f"the store holds {held} bytes")
        self.held = held


class PartsGone(Exception):
    """The session's bytes were consumed (completed) by a concurrent request."""


class PartSink(Protocol):
    """One part of an upload session being received, from ``start``."""

    start: int
    dropped: int
    """bytes received but not kept: a part under the store's minimum that does not end
    the file (S3 refuses such parts)"""

    @property
    def size(self) -> int:
        """Bytes of the file held so far, this part's included."""
        ...

    def write(self, chunk: bytes) -> None: ...

    def rewind(self) -> None:
        """Forget what this part wrote (the part was refused)."""
        ...

    def close(self) -> int:
        """Keep what this part wrote (what the store can keep); return the bytes held."""
        ...


class UploadParts(Protocol):
    """Where the bytes of resumable upload sessions accumulate, by upload id."""

    min_part_size: int
    """smallest part the store keeps unless it ends the file (0: any size)"""

    def begin(self, upload_id: str) -> None: ...

    def held(self, upload_id: str) -> int:
        """Bytes of the session the store holds (the authoritative offset)."""
        ...

    def open_part(self, upload_id: str, offset: int, total: int) -> PartSink:
        """Exclusive writer of the next part; raises :class:`PartBusy` when another part of
        the session is being written, :class:`PartOffsetMismatch` for a wrong ``offset``."""
        ...

    def assembled(self, upload_id: str) -> contextlib.AbstractContextManager[Path]:
        """The whole file as a staging file, exclusively; raises :class:`PartsGone` when a
        concurrent completion took the bytes. The file is gone afterwards (committed into
        the store by the caller, or deleted)."""
        ...

    def discard(self, upload_id: str) -> None:
        """Delete whatever the store holds of the session."""
        ...


def part_name(upload_id: str) -> str:
    """The staging file name of an upload session's bytes (the sweeper spares open ones)."""
    return f"upload-{upload_id}.part"


def lock_exclusive(writer: HashingWriter) -> None:
    """``flock`` the writer's file without waiting; :class:`PartBusy` when it is held."""
    try:
        fcntl.flock(writer.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        writer.close()
        raise PartBusy from None


class LocalPartSink:
    """Appends to the session's part file; its length is the offset."""

    def __init__(self, path: Path, offset: int) -> None:
        self.dropped = 0
        self.writer = HashingWriter(path, append=True, digest=False)
        lock_exclusive(self.writer)
        self.start = self.writer.size
        if offset != self.start:
            self.writer.close()
            raise PartOffsetMismatch(self.start)

    @property
    def size(self) -> int:
        return self.writer.size

    def write(self, chunk: bytes) -> None:
        self.writer.write(chunk)

    def rewind(self) -> None:
        self.writer.close()
        with self.writer.path.open("r+b") as handle:
            handle.truncate(self.start)
        self.writer.size = self.start

    def close(self) -> int:
        self.writer.close()
        return self.writer.size


class LocalUploadParts:
    """One part file per session in the staging area, appended to part by part; parts
    may have any size."""

    min_part_size = 0

    def __init__(self, store: StagingArea) -> None:
        self.store = store

    def _path(self, upload_id: str) -> Path:
        return self.store.staging_path(part_name(upload_id))

    def begin(self, upload_id: str) -> None:
        self._path(upload_id).touch()

    def held(self, upload_id: str) -> int:
        try:
            return self._path(upload_id).stat().st_size
        except FileNotFoundError:
            return 0

    def open_part(self, upload_id: str, offset: int, total: int) -> PartSink:
        return LocalPartSink(self._path(upload_id), offset)

    @contextlib.contextmanager
    def assembled(self, upload_id: str) -> Iterator[Path]:
        path = self._path(upload_id)
        try:
            handle = path.open("rb")
        except FileNotFoundError:
            raise PartsGone from None
        with handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)  # released when the handle closes
            if not path.exists():  # a concurrent completion moved the bytes meanwhile
                raise PartsGone
            yield path

    def discard(self, upload_id: str) -> None:
        self._path(upload_id).unlink(missing_ok=True)
