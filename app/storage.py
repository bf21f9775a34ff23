"""Content-addressed blob storage for bases, vectors, versions and benchmarks.

Blobs are named by their sha256. Bytes are first written to a staging file (hashed
while they are written), fsynced, checked against the expected digest and only then
renamed into place, so a name under ``blobs/`` is always a complete, verified file and
the database never points at a partial one.

Callers use only :class:`BlobStore`; :class:`LocalBlobStore` is the filesystem
backend, :class:`app.s3.S3BlobStore` the S3-compatible one (``local_path`` there
means a verified local cache copy). The bytes of resumable upload sessions are held
by the store's :class:`~app.parts.UploadParts` (``store.uploads``): one growing part file here,
an S3 multipart upload there.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from app.parts import LocalUploadParts, UploadParts
from medvec.hashing import sha256_file


@dataclass(frozen=True)
class BlobInfo:
    sha256: str
    size: int


class BlobVerificationError(Exception):
    """The staged bytes do not have the digest the caller expected."""


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


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
