"""Request bodies streamed into the blob store's staging area, hashed as they arrive.

Memory stays at one network chunk whatever the body size; a body over the limit is
refused as soon as it passes it, and any failure deletes the staged bytes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import anyio

from app.services.errors import PayloadTooLarge
from app.storage import BlobStore
from app.writers import HashingWriter


@dataclass(frozen=True)
class Staged:
    """A complete body on disk in the staging area, with its digest and size."""

    path: Path
    sha256: str
    size: int

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)


class Sink(Protocol):
    """Where ``write_stream`` appends: a staging file's writer or an upload part."""

    @property
    def size(self) -> int:
        """Bytes of the file held so far."""
        ...

    def write(self, chunk: bytes) -> None: ...


def too_large(limit: int, what: str = "the body") -> PayloadTooLarge:
    return PayloadTooLarge(
        f"{what} is larger than the registry accepts ({limit} bytes)",
        hint="raise MEDVEC_MAX_UPLOAD_BYTES on the server if this file is legitimate",
        limit=limit,
    )


async def write_stream(
    chunks: AsyncIterator[bytes],
    writer: Sink,
    limit: int,
    overflow: PayloadTooLarge | None = None,
) -> None:
    """Append ``chunks`` to ``writer`` until they end; raise 413 once ``limit`` is passed.

    ``limit`` counts the file's total size (earlier parts included); ``overflow`` is the
    error to raise (default: over the registry's limit). The bytes that arrived stay
    written when the stream breaks; the caller decides what to keep.
    """
    async for chunk in chunks:
        if writer.size + len(chunk) > limit:
            raise overflow or too_large(limit)
        writer.write(chunk)


async def stage_body(
    store: BlobStore, chunks: AsyncIterator[bytes], *, limit: int, declared: int | None
) -> Staged:
    """Stream a whole request body into a new staging file."""
    if declared is not None and declared > limit:
        raise too_large(limit)
    path = store.staging_path()
    writer = HashingWriter(path)
    try:
        await write_stream(chunks, writer, limit)
        await anyio.to_thread.run_sync(writer.close)
    except BaseException:
        writer.close()
        path.unlink(missing_ok=True)
        raise
    return Staged(path, writer.hexdigest(), writer.size)


def read_header_length(path: Path) -> int:
    """The safetensors header length (first 8 bytes, little endian) without reading more."""
    with path.open("rb") as handle:
        raw = handle.read(8)
    return int.from_bytes(raw, "little") if len(raw) == 8 else -1
