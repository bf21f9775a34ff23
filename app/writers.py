"""A file writer that hashes and counts what it writes (staging files, upload parts)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

__all__ = ["HashingWriter"]


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
