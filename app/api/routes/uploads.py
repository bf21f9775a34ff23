"""Resumable uploads (hospital): start or resume, send parts at offsets, ask, complete."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from app.api.deps import (
    HospitalPrincipal,
    SessionDep,
    SettingsDep,
    StorageDep,
    release_connection,
)
from app.api.parts import RAW_BODY, found, receive_part
from app.api.routes.common import ByteOffset, errors
from app.config import Settings
from app.errors import (
    Conflict,
    EmptyPart,
    Gone,
    InvalidInput,
    NotFound,
    OffsetMismatch,
    PartTooSmall,
    PayloadTooLarge,
    ShaMismatch,
)
from app.metrics import record_upload
from app.models import UploadSession
from app.schemas.uploads import UploadCreate, UploadRead
from app.schemas.vectors import VectorRead
from app.services import uploads

router = APIRouter(prefix="/uploads", tags=["uploads"])


def limits(settings: Settings) -> uploads.UploadLimits:
    return uploads.UploadLimits(
        max_bytes=settings.max_upload_bytes,
        expiry=settings.upload_expiry,
        max_norm=settings.max_vector_norm,
        max_header_bytes=settings.max_header_bytes,
    )


@router.post(
    "",
    status_code=201,
    response_model=UploadRead,
    responses={
        **found(
            UploadRead,
            "your open session for these bytes, resumed (send from offset), "
            "or a completed one when they already are your vector (vector_id)",
        ),
        **errors(InvalidInput, PayloadTooLarge),
    },
)
def start_upload(
    body: UploadCreate,
    response: Response,
    session: SessionDep,
    store: StorageDep,
    settings: SettingsDep,
    actor: HospitalPrincipal,
) -> UploadSession:
    """Start an upload of ``size`` bytes hashing to ``sha256``, or resume your open one.

    ``offset`` says where to continue; ``vector_id`` is set (and nothing needs sending)
    when these bytes already are your vector.
    """
    upload = uploads.open_upload(
        session, store, actor, sha256=body.sha256, size=body.size, limits=limits(settings)
    )
    response.status_code = 201 if upload.offset == 0 and upload.vector_id is None else 200
    return upload


@router.put(
    "/{upload_id}",
    response_model=UploadRead,
    openapi_extra=RAW_BODY,
    responses=errors(
        NotFound, Gone, Conflict, OffsetMismatch, PayloadTooLarge, EmptyPart, PartTooSmall
    ),
)
async def put_part(
    upload_id: str,
    offset: ByteOffset,
    request: Request,
    session: SessionDep,
    store: StorageDep,
    settings: SettingsDep,
    actor: HospitalPrincipal,
) -> UploadSession:
    """Append the raw body at byte ``offset``; answers the new offset.

    409 with ``detail.offset`` when the server holds a different number of bytes; 422
    ``empty_part`` when the body holds no bytes; 422 ``part_too_small`` when the blob
    store is S3 and a part that does not end the file is under its minimum
    (``detail.min_part_size``). Bytes that arrived before a broken connection are kept
    (on S3: when they are a whole part of at least the minimum).
    """
    upload = await run_in_threadpool(uploads.get_upload, session, store, actor, upload_id)
    part = await run_in_threadpool(uploads.PartWriter, store, upload, offset)
    await release_connection(session)  # the part file's lock guards the session meanwhile
    held = await receive_part(request, part)
    await run_in_threadpool(uploads.record_part, session, upload, held, settings.upload_expiry)
    return upload


@router.get("/{upload_id}", response_model=UploadRead, responses=errors(NotFound, Gone))
def get_upload(
    upload_id: str, session: SessionDep, store: StorageDep, actor: HospitalPrincipal
) -> UploadSession:
    """How many bytes of the upload the server holds."""
    return uploads.get_upload(session, store, actor, upload_id)


@router.post(
    "/{upload_id}/complete",
    status_code=201,
    response_model=VectorRead,
    responses={
        **found(VectorRead, "these bytes already are your vector"),
        **errors(NotFound, Gone, Conflict, ShaMismatch, InvalidInput),
    },
)
def complete_upload(
    upload_id: str,
    response: Response,
    session: SessionDep,
    store: StorageDep,
    settings: SettingsDep,
    actor: HospitalPrincipal,
) -> object:
    """Verify the sha256, validate the vector against its base and register it.

    201 with the new vector, 200 when already known, 422 with the reason when rejected
    (the upload is then reset and nothing is stored).
    """
    vector, created = uploads.complete_upload(session, store, actor, upload_id, limits(settings))
    if created:
        record_upload("vector", vector.size)
    response.status_code = 201 if created else 200
    return vector
