"""Helpers the route modules share: raw binary bodies and verified file downloads."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import FileResponse
from sqlalchemy.orm import Session

from app.api.deps import release_connection
from app.errors import AUTH_ERRORS, AppError, responses
from app.services.staging import Staged, stage_body
from app.storage import BlobStore

SHA_HEADER = "X-Content-SHA256"

RAW_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}

BINARY_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
        "description": f"the file; its sha256 is in the {SHA_HEADER} header",
    }
}


def declared_length(request: Request) -> int | None:
    value = request.headers.get("content-length")
    return int(value) if value and value.isdigit() else None


async def receive_file(request: Request, session: Session, store: BlobStore, limit: int) -> Staged:
    """Stream the raw request body into the staging area (hashing as it goes), holding no
    database connection meanwhile."""
    await release_connection(session)
    return await stage_body(store, request.stream(), limit=limit, declared=declared_length(request))


def blob_response(store: BlobStore, sha256: str, filename: str) -> FileResponse:
    return FileResponse(
        store.local_path(sha256),
        media_type="application/octet-stream",
        filename=filename,
        headers={SHA_HEADER: sha256},
    )


def errors(*extra: type[AppError]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI error responses: authentication errors plus ``extra``."""
    return responses(*AUTH_ERRORS, *extra)
