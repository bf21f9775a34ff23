"""Resumable upload sessions."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from app.jsontypes import JsonInt
from app.models.upload import UploadStatus
from app.schemas.common import MAX_JSON_INT, ReadModel, RequestModel


class UploadCreate(RequestModel):
    sha256: str = Field(pattern="^[0-9a-fA-F]{64}$", description="hex sha256 of the file")
    size: JsonInt = Field(
        gt=0,
        le=MAX_JSON_INT,
        description="file size in bytes (the registry's own limit, MEDVEC_MAX_UPLOAD_BYTES, "
        "is checked too: 413 over it)",
    )


class UploadRead(ReadModel):
    id: str
    sha256: str
    size: int
    offset: int = Field(description="bytes the server holds; send the rest from here")
    status: UploadStatus
    expires_at: datetime
    vector_id: str | None = Field(description="set when these bytes already are your vector")
