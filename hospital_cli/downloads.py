"""Verified downloads: stream to a temp file, check sha256, rename into place."""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable
from pathlib import Path

from hospital_cli.client import RegistryClient
from hospital_cli.errors import CliError
from medvec.hashing import sha256_file


class _HashingWriter:
    """A file wrapper that hashes what it writes (one pass over the bytes)."""

    def __init__(self, path: Path) -> None:
        self.stream = path.open("wb")
        self.digest = hashlib.sha256()

    def write(self, chunk: bytes) -> int:
        self.digest.update(chunk)
        return self.stream.write(chunk)

    def close(self) -> None:
        self.stream.flush()
        os.fsync(self.stream.fileno())
        self.stream.close()


def download_verified(
    client: RegistryClient,
    api_path: str,
    dest: Path,
    *,
    expected_sha256: str | None = None,
    on_total: Callable[[int | None], None] | None = None,
    on_bytes: Callable[[int], None] | None = None,
) -> str:
    """Download ``api_path`` to ``dest``; return its sha256.

    The bytes go to ``dest.partial`` and are renamed only when their sha256 equals the
    expected one (given, or the registry's ``X-Content-SHA256``). A failed check deletes
    the partial file and raises, so ``dest`` is never a corrupt model.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".partial")
    writer = _HashingWriter(partial)
    try:
        header = client.download(api_path, writer, on_total=on_total, on_bytes=on_bytes)  # type: ignore[arg-type]
    except BaseException:
        writer.close()
        partial.unlink(missing_ok=True)
        raise
    writer.close()
    actual = writer.digest.hexdigest()
    for label, wanted in (("the registry's record", expected_sha256), ("the header", header)):
        if wanted and wanted.lower() != actual:
            partial.unlink(missing_ok=True)
            raise CliError(
                f"sha256 mismatch for {api_path}: got {actual}, {label} says {wanted}",
                hint="the transfer was corrupted; run the command again",
            )
    os.replace(partial, dest)
    return actual


def cached_or_download(
    client: RegistryClient,
    api_path: str,
    cache: Path,
    sha256: str,
    *,
    suffix: str = ".safetensors",
    on_total: Callable[[int | None], None] | None = None,
    on_bytes: Callable[[int], None] | None = None,
) -> tuple[Path, bool]:
    """A content-addressed cache: ``cache/<sha256><suffix>``; returns (path, was_cached)."""
    target = cache / f"{sha256}{suffix}"
    if target.is_file() and sha256_file(target) == sha256:
        return target, True
    download_verified(
        client, api_path, target, expected_sha256=sha256, on_total=on_total, on_bytes=on_bytes
    )
    return target, False


def copy_to(source: Path, dest: Path) -> None:
    """Copy a cached file to a user path via temp-then-rename."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".partial")
    shutil.copyfile(source, tmp)
    os.replace(tmp, dest)
