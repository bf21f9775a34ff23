"""The share holder's HTTP API (``/api/v1``): thin routes over the services."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from aggregator import audit, shares, sums
from aggregator.auth import AggActor, authenticate, create_token, require
from aggregator.config import AggregatorSettings
from aggregator.models import AggAuditEvent, AggRole
from app.api.parts import RAW_BODY, SHA_HEADER, found, receive_part
from app.api.state import get_store, reject_nul_parameters, request_transaction
from app.errors import (
    AUTH_ERRORS,
    Conflict,
    EmptyPart,
    Gone,
    InvalidInput,
    NotFound,
    OffsetMismatch,
    PartTooSmall,
    PayloadTooLarge,
    ShaMismatch,
    responses,
)
from app.jsontypes import JsonInt
from app.security import parse_bearer
from app.services.upload_parts import PartWriter
from app.storage import BlobStore


def get_session(request: Request) -> Iterator[Session]:
    with request_transaction(request) as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session, scope="function")]


def get_settings(request: Request) -> AggregatorSettings:
    settings: AggregatorSettings = request.app.state.settings
    return settings


StoreDep = Annotated[BlobStore, Depends(get_store)]
SettingsDep = Annotated[AggregatorSettings, Depends(get_settings)]


def get_actor(request: Request, session: SessionDep) -> AggActor:
    return authenticate(session, parse_bearer(request.headers.get("authorization")))


Caller = Annotated[AggActor, Depends(get_actor)]


def require_admin(actor: Caller) -> AggActor:
    return require(actor, AggRole.ADMIN)


def require_hospital(actor: Caller) -> AggActor:
    return require(actor, AggRole.HOSPITAL)


def require_registry(actor: Caller) -> AggActor:
    return require(actor, AggRole.REGISTRY)


Admin = Annotated[AggActor, Depends(require_admin)]
Hospital = Annotated[AggActor, Depends(require_hospital)]
RegistryCaller = Annotated[AggActor, Depends(require_registry)]


NoNul = Annotated[str, Field(pattern=r"^[^\x00]*$")]
"""Request text: PostgreSQL text cannot hold NUL, so it is refused (422) before a query."""
PairId = Annotated[str, Field(pattern="^[0-9a-f]{32}$")]
"""The id a hospital's share A and share B carry (``medvec push --secure`` makes it)."""


class Read(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class TokenCreate(BaseModel):
    name: NoNul = Field(min_length=1, max_length=200, description="hospital name, or any name")
    role: AggRole


class TokenCreated(Read):
    id: str
    name: str
    role: AggRole
    token: str


class UploadCreate(BaseModel):
    """The registry's upload request (its declared bounds, which the protocol checks)."""

    sha256: str = Field(pattern="^[0-9a-fA-F]{64}$", description="hex sha256 of the file")
    size: JsonInt = Field(
        gt=0,
        le=2**53 - 1,  # the largest integer every JSON reader holds exactly
        description="file size in bytes, a JSON integer "
        "(MEDVEC_AGG_MAX_UPLOAD_BYTES is checked too: 413)",
    )


class UploadRead(Read):
    id: str
    sha256: str
    size: int
    offset: int
    status: str
    vector_id: str | None = Field(default=None, validation_alias="share_id")


class ShareRead(Read):
    id: str
    pair_id: str
    hospital: str
    sha256: str
    size: int
    status: str = "stored"
    created_at: datetime


class SumRequest(BaseModel):
    request_id: NoNul = Field(min_length=1, max_length=200)
    members: (
        Annotated[list[PairId], Field(min_length=1)]
        | Annotated[dict[PairId, JsonInt], Field(min_length=1)]
    ) = Field(
        description="the pair ids to sum, each once (the earlier form, pair id -> weight, is "
        "accepted when every weight is 1)"
    )


class SummedSetRead(Read):
    id: str
    request_id: str
    members: dict[str, int]
    requested_by: str
    sha256: str
    created_at: datetime


class AuditRead(Read):
    id: str
    actor: str
    action: str
    target: str | None
    payload: dict[str, Any]
    created_at: datetime


router = APIRouter(prefix="/api/v1", dependencies=[Depends(reject_nul_parameters)])


SUM_FILE: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
        "description": f"the sum, a share_sum safetensors file; its sha256 is in {SHA_HEADER}",
    }
}


@router.post(
    "/tokens", status_code=201, response_model=TokenCreated, responses=responses(*AUTH_ERRORS)
)
def mint(body: TokenCreate, session: SessionDep, actor: Admin) -> TokenCreated:
    """A token for a hospital (named as at the registry) or for the registry; shown once."""
    token, secret = create_token(session, body.name, body.role)
    audit.record(session, actor, "token.created", token.id, name=body.name, role=body.role.value)
    return TokenCreated(id=token.id, name=token.name, role=token.role, token=secret)


@router.post(
    "/uploads",
    status_code=201,
    response_model=UploadRead,
    responses={
        **found(UploadRead, "your open session for these bytes, resumed, or a completed one"),
        **responses(*AUTH_ERRORS, InvalidInput, PayloadTooLarge),
    },
)
def start_upload(
    body: UploadCreate,
    response: Response,
    session: SessionDep,
    store: StoreDep,
    settings: SettingsDep,
    actor: Hospital,
) -> object:
    """Start or resume the upload of a share B file (the registry's upload protocol)."""
    upload = shares.open_upload(
        session,
        store,
        actor,
        sha256=body.sha256,
        size=body.size,
        max_bytes=settings.max_upload_bytes,
        expiry=settings.upload_expiry,
    )
    response.status_code = 201 if upload.offset == 0 and upload.share_id is None else 200
    return upload


@router.get(
    "/uploads/{upload_id}",
    response_model=UploadRead,
    responses=responses(*AUTH_ERRORS, NotFound, Gone),
)
def get_upload(upload_id: str, session: SessionDep, store: StoreDep, actor: Hospital) -> object:
    return shares.get_upload(session, store, actor, upload_id)


@router.put(
    "/uploads/{upload_id}",
    response_model=UploadRead,
    openapi_extra=RAW_BODY,
    responses=responses(
        *AUTH_ERRORS,
        NotFound,
        Gone,
        Conflict,
        OffsetMismatch,
        PayloadTooLarge,
        EmptyPart,
        PartTooSmall,
    ),
)
async def put_part(
    upload_id: str,
    request: Request,
    session: SessionDep,
    store: StoreDep,
    actor: Hospital,
    offset: Annotated[int, Query(ge=0)],
) -> object:
    """Append the raw body at byte ``offset``; 409 with ``detail.offset`` when elsewhere."""
    upload = await run_in_threadpool(shares.get_upload, session, store, actor, upload_id)
    part = await run_in_threadpool(PartWriter, store, upload, offset)
    held = await receive_part(request, part)
    upload.offset = held
    return upload


@router.post(
    "/uploads/{upload_id}/complete",
    status_code=201,
    response_model=ShareRead,
    responses={
        **found(ShareRead, "these bytes already are your share"),
        **responses(*AUTH_ERRORS, NotFound, Gone, Conflict, ShaMismatch, InvalidInput),
    },
)
def complete_upload(
    upload_id: str,
    response: Response,
    session: SessionDep,
    store: StoreDep,
    settings: SettingsDep,
    actor: Hospital,
) -> object:
    """Verify the sha256 and register the share B under its pair id (200 when known)."""
    share, created = shares.complete_upload(
        session, store, actor, upload_id, settings.max_header_bytes
    )
    response.status_code = 201 if created else 200
    return share


@router.get(
    "/shares/{share_id}", response_model=ShareRead, responses=responses(*AUTH_ERRORS, NotFound)
)
def get_share(share_id: str, session: SessionDep, actor: Hospital) -> object:
    return shares.get_share(session, actor, share_id)


@router.post(
    "/sums",
    response_class=FileResponse,
    responses={
        **SUM_FILE,
        **responses(
            *AUTH_ERRORS, sums.SetTooSmall, sums.DifferencingSet, NotFound, Conflict, InvalidInput
        ),
    },
)
def release_sum(
    body: SumRequest,
    session: SessionDep,
    store: StoreDep,
    settings: SettingsDep,
    actor: RegistryCaller,
) -> FileResponse:
    """The plain sum of the members' shares B (a ``share_sum`` safetensors file whose
    header names the members and their public weights' sum).

    422 ``weights_not_allowed`` for a weight other than 1 or a pair id listed twice;
    403 ``set_too_small`` below K hospitals; 403 ``differencing_set`` when this sum and
    the ones already released would reveal something about one hospital's vectors alone
    (``detail.exposed``). A refused request is not recorded.
    """
    path, released = sums.release_sum(
        session,
        store,
        actor,
        request_id=body.request_id,
        members=body.members,
        k=settings.min_set_size,
    )
    session.commit()  # the release is recorded before a byte of the sum leaves
    return FileResponse(
        path,
        media_type="application/octet-stream",
        headers={SHA_HEADER: released.sha256},
        background=BackgroundTask(path.unlink, missing_ok=True),
    )


@router.get("/sums", response_model=list[SummedSetRead], responses=responses(*AUTH_ERRORS))
def list_sums(session: SessionDep, actor: Caller) -> object:
    """Every released sum (admin or registry)."""
    if actor.role is AggRole.HOSPITAL:
        require(actor, AggRole.ADMIN)
    return sums.list_released(session)


@router.get("/audit", response_model=list[AuditRead], responses=responses(*AUTH_ERRORS))
def audit_log(
    session: SessionDep,
    _actor: Admin,
    limit: Annotated[int, Query(ge=1, le=1000, description="events to return")] = 500,
) -> object:
    """The share holder's audit log, newest first."""
    query = select(AggAuditEvent).order_by(AggAuditEvent.created_at.desc()).limit(limit)
    return list(session.scalars(query))
