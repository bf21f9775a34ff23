"""``api_router``: one router per resource under ``/api/v1``; health probes at the root."""

from __future__ import annotations

import importlib

from fastapi import APIRouter

from app.api.routes import (
    audit,
    auth,
    bases,
    benchmarks,
    health,
    hospitals,
    tokens,
    uploads,
    vectors,
    versions,
)

API_PREFIX = "/api/v1"

#: route modules that other parts of the project add (merges, evaluations + leaderboard);
#: included when present so the registry runs before they land
OPTIONAL_ROUTES = ("app.api.routes.merges", "app.api.routes.evaluations")


def build_api_router() -> APIRouter:
    router = APIRouter(prefix=API_PREFIX)
    for module in (auth, hospitals, tokens, bases, benchmarks, uploads, vectors, versions, audit):
        router.include_router(module.router)
    for name in OPTIONAL_ROUTES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        router.include_router(module.router)
    return router


health_router = health.router
