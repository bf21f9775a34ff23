"""Streaming sha256, shared by the CLI, the registry and the workers."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import BinaryIO

CHUNK_SIZE = 1 << 20


def sha256_stream(stream: BinaryIO, *, chunk_size: int = CHUNK_SIZE) -> str:
    """Hex sha256 of everything left in ``stream``, read in fixed-size chunks."""
    digest = hashlib.sha256()
    while chunk := stream.read(chunk_size):
        digest.update(chunk)
    return digest.hexdigest()


def sha256_file(path: str | Path, *, chunk_size: int = CHUNK_SIZE) -> str:
    """Hex sha256 of a file without loading it into memory."""
    with open(path, "rb") as stream:
        return sha256_stream(stream, chunk_size=chunk_size)
