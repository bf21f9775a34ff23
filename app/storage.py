"""Content-addressed blob storage for bases, vectors, versions and benchmarks.

Blobs are named by their sha256. Bytes are first written to a staging file (hashed
while they are written), fsynced, checked against the expected digest and only then
renamed into place, so a name under ``blobs/`` is always a complete, verified file and
the database never points at a partial one.

Callers use only :class:`BlobStore`; :class:`LocalBlobStore` is the filesystem
backend. An S3-compatible backend implements the same protocol (``local_path`` then
means a verified local cache copy).
"""

from __future__ import annotations

import hashlib
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol


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


class BlobStore(Protocol):
    def staging_path(self, name: str | None = None) -> Path:
        """A path in the staging area (same filesystem as the blobs) for bytes to come."""
        ...

    def staging_files(self) -> list[Path]:
        """Every file in the staging area (bytes not yet committed, or left by a crash)."""
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

    def delete(self, sha256: str) -> None: ...

    def ping(self) -> None:
        """Raise when the store cannot be written."""
        ...


def _check_digest(sha256: str) -> str:
    if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
        raise ValueError(f"not a lowercase hex sha256: {sha256!r}")
    return sha256


def sha256_of(path: Path, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


class LocalBlobStore:
    """Blobs at ``root/sha256/ab/cd/<sha256>``; staging files at ``root/staging``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs = root / "sha256"
        self.staging = root / "staging"
        self.blobs.mkdir(parents=True, exist_ok=True)
        self.staging.mkdir(parents=True, exist_ok=True)

    def _path(self, sha256: str) -> Path:
        sha256 = _check_digest(sha256)
        return self.blobs / sha256[:2] / sha256[2:4] / sha256

    def staging_path(self, name: str | None = None) -> Path:
        return self.staging / (name or f"{uuid.uuid4().hex}.tmp")

    def staging_files(self) -> list[Path]:
        return sorted(path for path in self.staging.iterdir() if path.is_file())

    def commit(self, staged: Path, sha256: str, *, verify: bool = False) -> BlobInfo:
        target = self._path(sha256)
        if staged.parent.resolve() != self.staging.resolve():
            raise ValueError(f"{staged} is not in this store's staging area")
        if verify and sha256_of(staged) != sha256:
            staged.unlink(missing_ok=True)
            raise BlobVerificationError(f"staged bytes do not hash to {sha256}")
        size = staged.stat().st_size
        if target.exists():
            staged.unlink(missing_ok=True)
            return BlobInfo(sha256, target.stat().st_size)
        with staged.open("rb") as handle:
            os.fsync(handle.fileno())
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged, target)
        _fsync_dir(target.parent)
        return BlobInfo(sha256, size)

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

    def delete(self, sha256: str) -> None:
        self._path(sha256).unlink(missing_ok=True)

    def ping(self) -> None:
        probe = self.staging_path(".ping")
        probe.write_bytes(b"ok")
        probe.unlink()

    def iter_blobs(self) -> list[str]:
        """Every stored digest (for checks and garbage collection)."""
        return sorted(p.name for p in self.blobs.glob("*/*/*") if p.is_file())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
