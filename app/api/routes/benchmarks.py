"""Held-out benchmarks (admin): register a MedMNIST-layout ``.npz``, list."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool

from app.api.deps import AdminPrincipal, SessionDep, SettingsDep, StorageDep
from app.api.parts import RAW_BODY
from app.api.routes.common import errors, receive_file
from app.errors import Conflict, InvalidInput, PayloadTooLarge
from app.metrics import record_upload
from app.schemas.benchmarks import BenchmarkRead
from app.services import benchmarks

router = APIRouter(prefix="/benchmarks", tags=["benchmarks"])


@router.post(
    "",
    status_code=201,
    response_model=BenchmarkRead,
    openapi_extra=RAW_BODY,
    responses=errors(Conflict, InvalidInput, PayloadTooLarge),
)
async def register_benchmark(
    request: Request,
    name: Annotated[str, Query(min_length=1, max_length=200)],
    session: SessionDep,
    store: StorageDep,
    settings: SettingsDep,
    actor: AdminPrincipal,
) -> object:
    """Register a held-out dataset (test split required, val split for tuning).

    Hospitals never see benchmarks.
    """
    staged = await receive_file(request, session, store, settings.max_upload_bytes)
    benchmark = await run_in_threadpool(
        benchmarks.register_benchmark, session, store, actor, name=name, staged=staged
    )
    record_upload("benchmark", staged.size)
    return benchmark


@router.get("", response_model=list[BenchmarkRead], responses=errors())
def list_benchmarks(session: SessionDep, _actor: AdminPrincipal) -> object:
    """Every benchmark."""
    return benchmarks.list_benchmarks(session)
