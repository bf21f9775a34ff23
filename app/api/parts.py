"""Raw request bodies written at an offset: what the upload routes of the registry and of
the share holder share (the share holder imports this, not the registry's dependencies),
and how their OpenAPI documents describe a raw body and a create that finds its record."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from app.errors import EmptyPart, PayloadTooLarge
from app.services.staging import write_stream
from app.services.upload_parts import PartWriter

__all__ = ["RAW_BODY", "SHA_HEADER", "declared_length", "found", "receive_part"]

SHA_HEADER = "X-Content-SHA256"

RAW_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}
"""``openapi_extra`` of a route that reads the raw request body (a file or a part of one)."""


def found(model: type[BaseModel], description: str) -> dict[int | str, dict[str, Any]]:
    """``responses=`` entry: the 200 of a create (201) that finds its record already there."""
    return {200: {"model": model, "description": description}}


def declared_length(request: Request) -> int | None:
    value = request.headers.get("content-length")
    return int(value) if value and value.isdigit() else None


async def receive_part(request: Request, part: PartWriter) -> int:
    """Stream the body into ``part``; the bytes the server holds afterwards.

    A body past the session's size is refused (413) and what it wrote dropped; a client
    that disconnects keeps what arrived (it resumes from the server's offset); an empty
    part is 422 ``empty_part``, a part the store refused as too small 422.
    """
    disconnected = False
    try:
        part.check_declared(declared_length(request))
        await write_stream(request.stream(), part.writer, part.limit, part.overflow())
    except PayloadTooLarge:
        await run_in_threadpool(part.rewind)
        raise
    except ClientDisconnect:
        disconnected = True
    finally:
        held = await run_in_threadpool(part.close)
    too_small = part.too_small()
    if too_small is not None and not disconnected:
        raise too_small
    if held == part.start and not disconnected:
        raise EmptyPart(
            "the part is empty",
            hint=f"send the file's bytes from offset {part.start} as the request body",
            offset=part.start,
        )
    return held
