"""``api_router``: one router per resource under ``/api/v1``; health probes at the root."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.routes import (
    audit,
    auth,
    bases,
    benchmarks,
    evaluations,
    health,
    hospitals,
    merges,
    tokens,
    uploads,
    vectors,
    versions,
)

API_PREFIX = "/api/v1"

RESOURCES = (
    auth,
    hospitals,
    tokens,
    bases,
    benchmarks,
    uploads,
    vectors,
    versions,
    merges,
    evaluations,
    audit,
)


def build_api_router() -> APIRouter:
    router = APIRouter(prefix=API_PREFIX)
    for module in RESOURCES:
        router.include_router(module.router)
    return router


health_router = health.router
