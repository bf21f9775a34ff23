"""Content-addressed blob storage for bases, vectors, versions and benchmarks.

Blobs are named by their sha256. Bytes are first written to a staging file (hashed
while they are written), fsynced, checked against the expected digest and only then
renamed into place, so a name under ``blobs/`` is always a complete, verified file and
the database never points at a partial one.

Callers use only :class:`BlobStore`; :class:`LocalBlobStore` is the filesystem
backend, :class:`app.s3.S3BlobStore` the S3-compatible one (``local_path`` there
means a verified local cache copy). The bytes of resumable upload sessions are held
by the store's :class:`UploadParts` (``store.uploads``): one growing part file here,
an S3 multipart upload there.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from medvec.hashing import sha256_file


@dataclass(frozen=True)
class BlobInfo:
    sha256: str
    size: int


class BlobVerificationError(Exception):
    """The staged bytes do not have the digest the caller expected."""


class HashingWriter:
    """Appends to a file while hashing (unless ``digest`` is False) and counting what it
    writes. Unbuffered, so the file's length is always the count of bytes received."""

    def __init__(self, path: Path, *, append: bool = False, digest: bool = True) -> None:
        self.path = path
        self._file = path.open("ab" if append else "wb", buffering=0)
        self._digest = hashlib.sha256() if digest else None
        self.size = self._file.tell()

    def write(self, chunk: bytes) -> None:
        view = memoryview(chunk)
        while view:
            written = self._file.write(view) or 0
            view = view[written:]
        if self._digest is not None:
            self._digest.update(chunk)
        self.size += len(chunk)

    def fileno(self) -> int:
        return self._file.fileno()

    @property
    def closed(self) -> bool:
        return self._file.closed

    def hexdigest(self) -> str:
        """Digest of the bytes written through this writer (the whole file if it was new)."""
        if self._digest is None:
            raise ValueError("this writer does not hash")
        return self._digest.hexdigest()

    def close(self) -> None:
        """Flush and fsync: afterwards the bytes counted in ``size`` are on disk."""
        if self._file.closed:
            return
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()


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


class BlobStore(Protocol):
    @property
    def uploads(self) -> UploadParts:
        """The bytes of resumable upload sessions."""
        ...

    def staging_path(self, name: str | None = None) -> Path:
        """A path in the staging area (same filesystem as the blobs) for bytes to come."""
        ...

    def staging_files(self) -> list[Path]:
        """Every file in the staging area (bytes not yet committed, or left by a crash)."""
        ...

    def derived_path(self, name: str) -> Path:
        """A path on this machine for derived data that is rebuilt when missing or out of
        date (running sums); never swept as staging, never content-addressed."""
        ...

    def commit(self, staged: Path, sha256: str, *, verify: bool = False) -> BlobInfo:
        """Move a complete staged file into place under ``sha256``.

        ``sha256`` is the digest computed while the file was written; with ``verify`` the
        store re-reads the file and checks it. An existing blob is kept (same bytes).
        """
        ...

    def exists(self, sha256: str) -> bool: ...

    def size(self, sha256: str) -> int: ...

    def open(self, sha256: str) -> BinaryIO: ...

    def local_path(self, sha256: str) -> Path:
        """A local file holding the blob, for readers that need a path (validation)."""
        ...

    def local_file(self, sha256: str) -> Path | None:
        """The blob's own file when blobs live on local disk (served with sendfile), else
        ``None``: read it with :meth:`open`, which streams."""
        ...

    def delete(self, sha256: str) -> None: ...

    def remove_orphan(self, sha256: str, older_than: float) -> bool:
        """Delete the blob unless it was stored or claimed at or after ``older_than`` (a
        Unix time); True when it was deleted. The caller has checked that no row names
        it; a commit of the same bytes meanwhile claims the blob and keeps it."""
        ...

    def iter_blobs(self) -> list[str]:
        """Every stored digest, sorted (for ``fsck``)."""
        ...

    def ping(self) -> None:
        """Raise when the store cannot be written."""
        ...


def derived_path(staging: Path, name: str) -> Path:
    """``name`` in the ``derived`` folder beside a store's staging area."""
    folder = staging.parent / "derived"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / name


def check_digest(sha256: str) -> str:
    if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
        raise ValueError(f"not a lowercase hex sha256: {sha256!r}")
    return sha256


def sharded(sha256: str) -> str:
    """``ab/cd/<sha256>``: a blob's place under a store's root (two levels of 256 folders,
    so no folder holds more than a few thousand names)."""
    sha256 = check_digest(sha256)
    return f"{sha256[:2]}/{sha256[2:4]}/{sha256}"


class StagingArea:
    """The local folder where bytes wait to be committed into a store: request bodies,
    upload parts, merges being written. Stores share it through :class:`StagedStore`."""

    def __init__(self, folder: Path) -> None:
        self.staging = folder
        self.staging.mkdir(parents=True, exist_ok=True)

    def staging_path(self, name: str | None = None) -> Path:
        """A path in the staging area (same filesystem as the blobs) for bytes to come."""
        return self.staging / (name or f"{uuid.uuid4().hex}.tmp")

    def staging_files(self) -> list[Path]:
        """Every file in the staging area (bytes not yet committed, or left by a crash)."""
        return sorted(path for path in self.staging.iterdir() if path.is_file())

    def staged_size(self, staged: Path, sha256: str, *, verify: bool) -> int:
        """The size of a file about to be committed under ``sha256``; refuses a file from
        outside the staging area and, with ``verify``, one that hashes otherwise (deleted)."""
        check_digest(sha256)
        if staged.parent.resolve() != self.staging.resolve():
            raise ValueError(f"{staged} is not in this store's staging area")
        if verify and sha256_file(staged) != sha256:
            staged.unlink(missing_ok=True)
            raise BlobVerificationError(f"staged bytes do not hash to {sha256}")
        return staged.stat().st_size


class LocalBlobStore(StagingArea):
    """Blobs at ``root/sha256/ab/cd/<sha256>``; staging files at ``root/staging``.

    A blob's mtime is when it was last stored or claimed: :meth:`commit` of bytes already
    in place touches the blob instead of writing it, and :meth:`remove_orphan` deletes
    only a blob nothing touched for a while. A request killed between the rename and its
    row's commit leaves such an orphan; a retry of the same bytes claims it (nothing is
    lost), and the sweeper removes one that nobody claims.
    """

    def __init__(self, root: Path) -> None:
        super().__init__(root / "staging")
        self.root = root
        self.blobs = root / "sha256"
        self.blobs.mkdir(parents=True, exist_ok=True)
        self._uploads = LocalUploadParts(self)

    @property
    def uploads(self) -> UploadParts:
        return self._uploads

    def _path(self, sha256: str) -> Path:
        return self.blobs / sharded(sha256)

    def derived_path(self, name: str) -> Path:
        return derived_path(self.staging, name)

    def commit(self, staged: Path, sha256: str, *, verify: bool = False) -> BlobInfo:
        size = self.staged_size(staged, sha256, verify=verify)
        target = self._path(sha256)
        if _claim(target):
            staged.unlink(missing_ok=True)
            return BlobInfo(sha256, size)
        with staged.open("rb") as handle:
            os.fsync(handle.fileno())
        os.utime(staged)  # stored now, however long ago its bytes arrived
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged, target)
        _fsync_dir(target.parent)
        return BlobInfo(sha256, size)

    def remove_orphan(self, sha256: str, older_than: float) -> bool:
        """The blob is first renamed out of place, then its mtime is read again: a commit
        that claimed it before the rename is seen there (the blob goes back), and one
        after the rename finds no blob and puts its own copy in place."""
        target = self._path(sha256)
        held = self.staging_path(f"orphan-{sha256}.tmp")
        try:
            if target.stat().st_mtime >= older_than:
                return False
            os.replace(target, held)
        except FileNotFoundError:
            return False
        if held.stat().st_mtime >= older_than:
            os.replace(held, target)
            return False
        held.unlink()
        return True

    def exists(self, sha256: str) -> bool:
        return self._path(sha256).is_file()

    def size(self, sha256: str) -> int:
        return self._path(sha256).stat().st_size

    def open(self, sha256: str) -> BinaryIO:
        return self._path(sha256).open("rb")

    def local_path(self, sha256: str) -> Path:
        path = self._path(sha256)
        if not path.is_file():
            raise FileNotFoundError(f"blob {sha256} is missing from {self.blobs}")
        return path

    def local_file(self, sha256: str) -> Path | None:
        return self.local_path(sha256)

    def delete(self, sha256: str) -> None:
        self._path(sha256).unlink(missing_ok=True)

    def ping(self) -> None:
        probe = self.staging_path(".ping")
        probe.write_bytes(b"ok")
        probe.unlink()

    def iter_blobs(self) -> list[str]:
        """Every stored digest (for checks and garbage collection)."""
        return sorted(p.name for p in self.blobs.glob("*/*/*") if p.is_file())


def _claim(blob: Path) -> bool:
    """Mark an existing blob as stored now (its mtime); False when there is none."""
    try:
        os.utime(blob)
    except FileNotFoundError:
        return False
    return True


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

    def __init__(self, store: LocalBlobStore) -> None:
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


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
