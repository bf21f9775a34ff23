"""S3-compatible blob storage (AWS S3, MinIO, Ceph, ...) behind the :class:`BlobStore`
protocol, through boto3.

- **Blobs** are objects at ``<prefix>sha256/ab/cd/<sha256>``, written once: a commit
  whose key exists only drops the staged file. Bytes are staged, hashed and verified
  on local disk first, then sent with a multipart upload in parts of
  ``MEDVEC_S3_PART_SIZE``; an object exists only once S3 completed the upload, so a
  key is never a partial blob.
- **Reading**: :meth:`S3BlobStore.open` streams the object (API downloads);
  :meth:`S3BlobStore.local_path` (validation, merges, evaluation) downloads the blob
  once into a local cache, verifies its sha256 and renames it into place; the least
  recently used copies go when the cache passes ``MEDVEC_BLOB_CACHE_MAX_BYTES``.
- **Resumable upload sessions** (:mod:`app.s3_parts`) are S3 multipart uploads at
  ``<prefix>uploads/<id>``: each ``PUT /uploads/{id}`` part becomes one S3 part, and the
  parts S3 lists are the offset every API replica sees. S3 takes parts of at least 5 MiB
  except the last, so a shorter part that does not end the file is refused (422
  ``part_too_small``); ``medvec push`` sends 8 MiB parts. A part cut off mid-body is kept
  when what arrived is itself a valid part. Completion asks S3 to assemble the parts,
  downloads the object into staging while it is checked, and deletes it.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path
from typing import Any, BinaryIO, cast

from app.config import Settings
from app.parts import UploadParts
from app.s3_parts import S3UploadParts
from app.storage import BlobInfo, BlobVerificationError, StagingArea, derived_path, sharded
from app.writers import HashingWriter

COPY_CHUNK = 1 << 20


def parse_blob_url(url: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` → (``bucket``, ``some/prefix/``)."""
    if not url.startswith("s3://"):
        raise ValueError(f"not an s3:// URL: {url!r}")
    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    prefix = prefix.strip("/")
    return bucket, f"{prefix}/" if prefix else ""


def make_s3_client(settings: Settings) -> Any:
    """A boto3 S3 client; credentials come from boto3's usual chain (environment,
    shared config files, instance or pod role)."""
    import boto3
    from botocore.config import Config

    config = Config(
        retries={"max_attempts": 5, "mode": "standard"},
        # a custom endpoint (MinIO, Ceph, a test server) rarely has per-bucket DNS names
        s3={"addressing_style": "path" if settings.s3_endpoint_url else "auto"},
    )
    return boto3.client(
        "s3",
        endpoint_url=settings.s3_endpoint_url,
        region_name=settings.s3_region,
        config=config,
    )


def _is_missing(exc: Exception) -> bool:
    from botocore.exceptions import ClientError

    if not isinstance(exc, ClientError):
        return False
    code = str(exc.response.get("Error", {}).get("Code", ""))
    return code in {"404", "NoSuchKey", "NotFound", "NoSuchUpload"}


class S3BlobStore(StagingArea):
    """Blobs in ``bucket`` under ``prefix``; staging and the read cache in ``local_root``."""

    def __init__(
        self,
        client: Any,
        bucket: str,
        prefix: str,
        local_root: Path,
        *,
        part_size: int = 8 << 20,
        cache_max_bytes: int = 20 << 30,
    ) -> None:
        super().__init__(local_root / "staging")
        self.client = client
        self.bucket = bucket
        self.prefix = prefix
        self.cache = local_root / "cache"
        self.part_size = part_size
        self.cache_max_bytes = cache_max_bytes
        self.cache.mkdir(parents=True, exist_ok=True)
        self._uploads = S3UploadParts(self)

    @classmethod
    def from_settings(cls, settings: Settings) -> S3BlobStore:
        assert settings.blob_url is not None
        bucket, prefix = parse_blob_url(settings.blob_url)
        return cls(
            make_s3_client(settings),
            bucket,
            prefix,
            settings.data_dir / "blobs",
            part_size=settings.s3_part_size,
            cache_max_bytes=settings.blob_cache_max_bytes,
        )

    @property
    def uploads(self) -> UploadParts:
        return self._uploads

    def key(self, sha256: str) -> str:
        return f"{self.prefix}sha256/{sharded(sha256)}"

    def _cached(self, sha256: str) -> Path:
        return self.cache / sharded(sha256)

    def derived_path(self, name: str) -> Path:
        return derived_path(self.staging, name)

    def _transfer_config(self) -> Any:
        from boto3.s3.transfer import TransferConfig

        return TransferConfig(
            multipart_threshold=self.part_size, multipart_chunksize=self.part_size
        )

    def commit(self, staged: Path, sha256: str, *, verify: bool = False) -> BlobInfo:
        size = self.staged_size(staged, sha256, verify=verify)
        if self.exists(sha256):
            staged.unlink(missing_ok=True)
            return BlobInfo(sha256, self.size(sha256))
        self.client.upload_file(
            str(staged), self.bucket, self.key(sha256), Config=self._transfer_config()
        )
        # the staged bytes are verified: keep them as the cache copy readers ask for next
        cached = self._cached(sha256)
        cached.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged, cached)
        return BlobInfo(sha256, size)

    def _head(self, sha256: str) -> dict[str, Any] | None:
        try:
            return cast(
                dict[str, Any], self.client.head_object(Bucket=self.bucket, Key=self.key(sha256))
            )
        except Exception as exc:
            if _is_missing(exc):
                return None
            raise

    def exists(self, sha256: str) -> bool:
        return self._head(sha256) is not None

    def size(self, sha256: str) -> int:
        head = self._head(sha256)
        if head is None:
            raise FileNotFoundError(
                f"blob {sha256} is missing from s3://{self.bucket}/{self.prefix}"
            )
        return int(head["ContentLength"])

    def open(self, sha256: str) -> BinaryIO:
        """The object's bytes as a stream (nothing is read ahead)."""
        try:
            answer = self.client.get_object(Bucket=self.bucket, Key=self.key(sha256))
        except Exception as exc:
            if _is_missing(exc):
                raise FileNotFoundError(f"blob {sha256} is missing from the bucket") from exc
            raise
        return cast(BinaryIO, answer["Body"])

    def local_path(self, sha256: str) -> Path:
        cached = self._cached(sha256)
        if cached.is_file():
            os.utime(cached)  # recently used: evicted last
            return cached
        partial = self.staging_path(f"fetch-{sha256[:16]}-{uuid.uuid4().hex}.tmp")
        writer = HashingWriter(partial)
        try:
            with contextlib.closing(self.open(sha256)) as body:
                while chunk := body.read(COPY_CHUNK):
                    writer.write(chunk)
            writer.close()
            if writer.hexdigest() != sha256:
                raise BlobVerificationError(f"the bucket's copy of {sha256} hashes otherwise")
            cached.parent.mkdir(parents=True, exist_ok=True)
            os.replace(partial, cached)
        finally:
            writer.close()
            partial.unlink(missing_ok=True)
        self._evict(keep=cached)
        return cached

    def _evict(self, keep: Path) -> None:
        """Drop the least recently used cache copies while the cache is over its bound."""
        files = []
        for path in self.cache.glob("*/*/*"):
            with contextlib.suppress(FileNotFoundError):
                stat = path.stat()
                files.append((stat.st_mtime, stat.st_size, path))
        total = sum(size for _, size, _ in files)
        for _, size, path in sorted(files):
            if total <= self.cache_max_bytes:
                break
            if path != keep:
                path.unlink(missing_ok=True)
                total -= size

    def local_file(self, sha256: str) -> Path | None:
        return None

    def delete(self, sha256: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self.key(sha256))
        self._cached(sha256).unlink(missing_ok=True)

    def remove_orphan(self, sha256: str, older_than: float) -> bool:
        """Never removes: S3 has no atomic rename, so a concurrent commit of the same
        bytes could not be told from an orphan. ``medvec-server fsck`` lists orphans."""
        return False

    def ping(self) -> None:
        probe = f"{self.prefix}.ping-{uuid.uuid4().hex}"
        self.client.put_object(Bucket=self.bucket, Key=probe, Body=b"ok")
        self.client.delete_object(Bucket=self.bucket, Key=probe)
        local = self.staging_path(".ping")
        local.write_bytes(b"ok")
        local.unlink()

    def iter_blobs(self) -> list[str]:
        """Every stored digest (for checks and garbage collection)."""
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=f"{self.prefix}sha256/"
        )
        return sorted(
            item["Key"].rsplit("/", 1)[-1] for page in pages for item in page.get("Contents", [])
        )
