"""The blob store the settings name: a local folder by default, S3 with ``MEDVEC_BLOB_URL``."""

from __future__ import annotations

from app.config import Settings
from app.storage import BlobStore, LocalBlobStore


def make_store(settings: Settings) -> BlobStore:
    """``data_dir/blobs`` on local disk, or the ``s3://`` bucket of ``MEDVEC_BLOB_URL``
    (staging and the read cache then stay in ``data_dir/blobs``)."""
    if settings.blob_url is None:
        return LocalBlobStore(settings.data_dir / "blobs")
    from app.s3 import S3BlobStore

    return S3BlobStore.from_settings(settings)
