"""Helpers the route modules share: raw binary bodies and verified file downloads."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any, BinaryIO
from urllib.parse import quote

from fastapi import Query, Request
from fastapi.responses import FileResponse, Response, StreamingResponse
from sqlalchemy.orm import Session

from app.api.deps import release_connection
from app.api.parts import SHA_HEADER, declared_length
from app.errors import AUTH_ERRORS, AppError, responses
from app.schemas.common import MAX_INT63
from app.services.staging import Staged, stage_body
from app.storage import BlobStore

MAX_INT32 = 2**31 - 1
"""The bound of a row count or page offset: every database's plain INTEGER holds it."""

PageOffset = Annotated[int, Query(ge=0, le=MAX_INT32, description="rows to skip")]
PageLimit = Annotated[int, Query(ge=1, le=1000, description="rows to return")]
ByteOffset = Annotated[int, Query(ge=0, le=MAX_INT63, description="byte offset in the file")]
"""Integer query parameters always come bounded, so an absurd number is a 422 and never
reaches the database (SQLite and PostgreSQL both fail on integers past 64 bits)."""

BINARY_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
        "description": f"the file; its sha256 is in the {SHA_HEADER} header",
    }
}


async def receive_file(request: Request, session: Session, store: BlobStore, limit: int) -> Staged:
    """Stream the raw request body into the staging area (hashing as it goes), holding no
    database connection meanwhile."""
    await release_connection(session)
    return await stage_body(store, request.stream(), limit=limit, declared=declared_length(request))


DOWNLOAD_CHUNK = 1 << 20


def _chunks(handle: BinaryIO) -> Iterator[bytes]:
    with handle:
        while chunk := handle.read(DOWNLOAD_CHUNK):
            yield chunk


def blob_response(store: BlobStore, sha256: str, filename: str) -> Response:
    """The blob as a download: its local file (sendfile), or streamed from the store
    chunk by chunk (S3), never held in memory whole."""
    path = store.local_file(sha256)
    if path is not None:
        return FileResponse(
            path,
            media_type="application/octet-stream",
            filename=filename,
            headers={SHA_HEADER: sha256},
        )
    size = store.size(sha256)
    headers = {
        SHA_HEADER: sha256,
        "Content-Length": str(size),
        "Content-Disposition": f"attachment; filename*=utf-8''{quote(filename)}",
    }
    return StreamingResponse(
        _chunks(store.open(sha256)), media_type="application/octet-stream", headers=headers
    )


def errors(*extra: type[AppError]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI error responses: authentication errors plus ``extra``."""
    return responses(*AUTH_ERRORS, *extra)
