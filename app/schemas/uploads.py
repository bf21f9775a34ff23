"""Resumable upload sessions."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from app.models.upload import UploadStatus
from app.schemas.common import ReadModel


class UploadCreate(BaseModel):
    sha256: str = Field(min_length=64, max_length=64, description="hex sha256 of the file")
    size: int = Field(gt=0, description="file size in bytes")


class UploadRead(ReadModel):
    id: str
    sha256: str
    size: int
    offset: int = Field(description="bytes the server holds; send the rest from here")
    status: UploadStatus
    expires_at: datetime
    vector_id: str | None = Field(description="set when these bytes already are your vector")
