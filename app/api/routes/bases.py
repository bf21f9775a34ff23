"""Base models: register (admin, raw model file), read and download (any token)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from app.api.deps import AdminPrincipal, Principal, SessionDep, SettingsDep, StorageDep
from app.api.parts import RAW_BODY, found
from app.api.routes.common import BINARY_RESPONSE, blob_response, errors, receive_file
from app.errors import InvalidInput, NotFound, PayloadTooLarge
from app.metrics import record_upload
from app.schemas.bases import BaseRead
from app.services import bases

router = APIRouter(prefix="/bases", tags=["bases"])


@router.post(
    "",
    status_code=201,
    response_model=BaseRead,
    openapi_extra=RAW_BODY,
    responses={
        **found(BaseRead, "these bytes are already a base"),
        **errors(InvalidInput, PayloadTooLarge),
    },
)
async def register_base(
    request: Request,
    response: Response,
    name: Annotated[str, Query(min_length=1, max_length=200)],
    session: SessionDep,
    store: StorageDep,
    settings: SettingsDep,
    actor: AdminPrincipal,
) -> object:
    """Register a MedVec model file as a base; its spec comes from the file's header.

    The same bytes again answer 200 with the existing base.
    """
    staged = await receive_file(request, session, store, settings.max_upload_bytes)
    base, created = await run_in_threadpool(
        bases.register_base,
        session,
        store,
        actor,
        name=name,
        staged=staged,
        max_header_bytes=settings.max_header_bytes,
    )
    if created:
        record_upload("base", staged.size)
    response.status_code = 201 if created else 200
    return base


@router.get("", response_model=list[BaseRead], responses=errors())
def list_bases(session: SessionDep, _actor: Principal) -> object:
    """Every base, newest generation first."""
    return bases.list_bases(session)


@router.get("/{base_id}", response_model=BaseRead, responses=errors(NotFound))
def get_base(base_id: str, session: SessionDep, _actor: Principal) -> object:
    """A base by id; ``current`` is the newest generation."""
    return bases.get_base(session, base_id)


@router.get(
    "/{base_id}/download",
    response_class=Response,
    responses={**BINARY_RESPONSE, **errors(NotFound)},
)
def download_base(
    base_id: str, session: SessionDep, store: StorageDep, _actor: Principal
) -> object:
    """The base's model file, with ``X-Content-SHA256``."""
    base = bases.get_base(session, base_id)
    return blob_response(store, base.sha256, f"{base.name}.safetensors")
