"""``api_router``: one router per resource under ``/api/v1``; health probes at the root."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from app.api.routes import (
    audit,
    auth,
    bases,
    benchmarks,
    evaluations,
    health,
    hospitals,
    merges,
    privacy,
    quarantine,
    secure,
    tokens,
    uploads,
    vectors,
    versions,
)
from app.api.state import reject_nul_parameters

API_PREFIX = "/api/v1"

RESOURCES = (
    auth,
    hospitals,
    privacy,
    tokens,
    bases,
    benchmarks,
    uploads,
    vectors,
    quarantine,
    versions,
    merges,
    secure,
    evaluations,
    audit,
)


def build_api_router() -> APIRouter:
    router = APIRouter(prefix=API_PREFIX, dependencies=[Depends(reject_nul_parameters)])
    for module in RESOURCES:
        router.include_router(module.router)
    return router


health_router = health.router
