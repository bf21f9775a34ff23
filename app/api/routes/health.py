"""Liveness and readiness probes (no token needed)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text

from app.errors import ErrorBody

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"model": ErrorBody}})
def readyz(request: Request) -> Any:
    """The database answers and the blob store can be written."""
    state = request.app.state
    checks: dict[str, str] = {}
    try:
        with state.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:  # any driver error means "not ready"
        checks["database"] = f"error: {exc.__class__.__name__}: {exc}"
    try:
        state.store.ping()
        checks["storage"] = "ok"
    except Exception as exc:  # a full disk, or an unreachable or refusing S3 endpoint
        checks["storage"] = f"error: {exc.__class__.__name__}: {exc}"
    if all(v == "ok" for v in checks.values()):
        return {"status": "ready", **checks}
    body = ErrorBody(code="not_ready", message="a dependency is unavailable", detail=checks)
    return JSONResponse(status_code=503, content=body.model_dump())
