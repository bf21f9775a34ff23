"""Data vectors: one-shot upload (hospital), listing and download (owner or admin)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from app.api.deps import HospitalPrincipal, Principal, SessionDep, SettingsDep, StorageDep
from app.api.parts import RAW_BODY, found
from app.api.routes.common import BINARY_RESPONSE, blob_response, errors, receive_file
from app.errors import InvalidInput, NotFound, PayloadTooLarge
from app.metrics import record_upload
from app.models import VectorStatus
from app.schemas.vectors import VectorRead
from app.services import vectors

router = APIRouter(prefix="/vectors", tags=["vectors"])


@router.post(
    "",
    status_code=201,
    response_model=VectorRead,
    openapi_extra=RAW_BODY,
    responses={
        **found(VectorRead, "these bytes already are your vector"),
        **errors(InvalidInput, PayloadTooLarge),
    },
)
async def push_vector(
    request: Request,
    response: Response,
    session: SessionDep,
    store: StorageDep,
    settings: SettingsDep,
    actor: HospitalPrincipal,
) -> object:
    """Upload a whole vector file in one request (same validation as a resumable upload).

    201 with the new vector; 200 when these bytes already are your vector; 422 with
    the reason when the vector is rejected (nothing is stored).
    """
    staged = await receive_file(request, session, store, settings.max_upload_bytes)
    vector, created = await run_in_threadpool(
        vectors.accept_vector,
        session,
        store,
        actor,
        staged,
        max_norm=settings.max_vector_norm,
        max_header_bytes=settings.max_header_bytes,
    )
    if created:
        record_upload("vector", staged.size)
    response.status_code = 201 if created else 200
    return vector


@router.get("", response_model=list[VectorRead], responses=errors())
def list_vectors(
    session: SessionDep,
    actor: Principal,
    base_id: str | None = None,
    status: VectorStatus | None = None,
    latest: bool | None = None,
    hospital_id: str | None = None,
) -> object:
    """Your vectors (a hospital) or everyone's (an admin; ``hospital_id`` filters).

    ``latest=true`` keeps each hospital's current vector per base.
    """
    return vectors.list_vectors(
        session, actor, base_id=base_id, status=status, latest=latest, hospital_id=hospital_id
    )


@router.get("/{vector_id}", response_model=VectorRead, responses=errors(NotFound))
def get_vector(vector_id: str, session: SessionDep, actor: Principal) -> object:
    """One vector: its owner or an admin; 404 for anyone else."""
    return vectors.get_vector(session, actor, vector_id)


@router.get(
    "/{vector_id}/download",
    response_class=Response,
    responses={**BINARY_RESPONSE, **errors(NotFound)},
)
def download_vector(
    vector_id: str, session: SessionDep, store: StorageDep, actor: Principal
) -> object:
    """The vector file (owner or admin), with ``X-Content-SHA256``."""
    vector = vectors.get_vector(session, actor, vector_id)
    return blob_response(store, vector.sha256, f"vector-{vector.id}.safetensors")
