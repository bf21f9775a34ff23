"""The HTTP face of errors: each domain error's status, and the one JSON body every error
is rendered as.

``{"code": str, "message": str, "detail": object | null}``: ``message`` says what is
wrong and how to fix it. Services raise the domain errors of ``app.services.errors``
(re-exported here under the same names); core-library errors (``medvec.errors``) map
onto a status here too, so services let them propagate.
"""

from __future__ import annotations

import logging
import re
import tempfile
from http import HTTPStatus
from pathlib import PurePath
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.services.errors import (
    BaseNotReady,
    BaseRejected,
    Conflict,
    DomainError,
    EmptyPart,
    Forbidden,
    GateFailed,
    Gone,
    HospitalMismatch,
    InvalidInput,
    NotFound,
    OffsetMismatch,
    PartTooSmall,
    PayloadTooLarge,
    PreconditionFailed,
    ShaMismatch,
    Unauthenticated,
    UnknownBase,
)
from medvec.errors import MedVecError

__all__ = [
    "AUTH_ERRORS",
    "AppError",
    "BaseNotReady",
    "BaseRejected",
    "Conflict",
    "DomainError",
    "EmptyPart",
    "ErrorBody",
    "Forbidden",
    "GateFailed",
    "Gone",
    "HospitalMismatch",
    "InvalidInput",
    "NotFound",
    "OffsetMismatch",
    "PartTooSmall",
    "PayloadTooLarge",
    "PreconditionFailed",
    "ShaMismatch",
    "Unauthenticated",
    "UnknownBase",
    "install_error_handlers",
    "render",
    "responses",
    "status_of",
]

log = logging.getLogger(__name__)


class ErrorBody(BaseModel):
    """The body of every 4xx/5xx answer."""

    code: str
    message: str
    detail: Any = None


#: the domain errors services raise, under the names routes and dependencies use
AppError = DomainError

#: the HTTP status of each domain error class (a subclass takes its nearest ancestor's)
STATUS: dict[type[DomainError], int] = {
    DomainError: 400,
    Unauthenticated: 401,
    Forbidden: 403,
    NotFound: 404,
    Conflict: 409,
    Gone: 410,
    PayloadTooLarge: 413,
    InvalidInput: 422,
    PreconditionFailed: 409,
}


def status_of(error: DomainError | type[DomainError]) -> int:
    """The status code ``error`` (an instance or a class) is answered with."""
    cls = error if isinstance(error, type) else type(error)
    return next(STATUS[c] for c in cls.__mro__ if c in STATUS)


def render(error: DomainError) -> ErrorBody:
    return ErrorBody(code=error.code, message=error.text, detail=error.detail)


#: seconds a client is asked to wait when the database is out of reach (``Retry-After``)
DATABASE_RETRY_AFTER_S = 5

#: the database connection broke or could not be had: a dropped or terminated connection,
#: a database restarting, a full connection pool, SQLite busy past its timeout
DATABASE_UNAVAILABLE = (OperationalError, InterfaceError, PoolTimeout)


def _error_response(status: int, body: ErrorBody, headers: dict[str, str] | None = None) -> Any:
    return JSONResponse(status_code=status, content=body.model_dump(), headers=headers)


def _medvec_body(exc: MedVecError) -> ErrorBody:
    message = f"{exc.message} — {exc.hint}" if exc.hint else exc.message
    return ErrorBody(code=exc.code, message=message, detail=exc.detail or None)


def _server_roots(request: Request) -> list[str]:
    """Directories of this server whose paths an answer must not reveal."""
    roots = {tempfile.gettempdir()}
    settings = getattr(request.app.state, "settings", None)
    data_dir = getattr(settings, "data_dir", None)
    if data_dir is not None:
        roots |= {str(data_dir), str(data_dir.resolve())}
    return sorted((r.rstrip("/") for r in roots if r.strip("/")), key=len, reverse=True)


def _is_server_path(value: object) -> bool:
    if isinstance(value, PurePath):
        return value.is_absolute()
    if not isinstance(value, str) or " " in value:
        return False
    return value.startswith("/") and "/" in value[1:]


def scrub_paths(body: ErrorBody, roots: list[str]) -> ErrorBody:
    """``body`` without the server's file paths: detail entries holding an absolute path
    are dropped (the staging file a request was written to means nothing to the client),
    and a path under one of ``roots`` in a message shrinks to its file name."""
    pattern = (
        re.compile("(?:" + "|".join(re.escape(r) for r in roots) + r")/(?:[^\s'\"]*/)?")
        if roots
        else None
    )

    def text(value: str) -> str:
        return pattern.sub("", value) if pattern else value

    def clean(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items() if not _is_server_path(v)}
        if isinstance(value, list | tuple):
            return [clean(v) for v in value if not _is_server_path(v)]
        if isinstance(value, str):
            return text(value)
        return value

    detail = clean(body.detail)
    return ErrorBody(code=body.code, message=text(body.message), detail=detail or None)


class InternalErrorMiddleware:
    """An unexpected exception still answers the one error body (500 ``internal_error``),
    logged with its traceback here; the body names no path or internal detail."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watch(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except Exception:
            log.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
            if started:
                raise
            body = ErrorBody(
                code="internal_error",
                message="the registry failed on this request — try again; if it persists, "
                "give the operator the time of the request (the server log has the cause)",
            )
            await JSONResponse(status_code=500, content=body.model_dump())(scope, receive, send)


METHOD_ORDER = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def allowed_methods(request: Request) -> list[str]:
    """Every method some route of the app serves on the request's path, and OPTIONS.

    FastAPI makes one route per method, so Starlette's own 405 names only the first
    route whose path matched; this asks every route about every method instead. A path
    the OpenAPI document names literally (``/versions/rollback``) is that operation's
    resource: a templated route (``/versions/{version_id}``) whose parameter happens to
    match it adds nothing (it would only answer 404 there)."""
    routes = request.app.router.routes
    served = [
        method
        for method in METHOD_ORDER[:-1]
        if any(r.matches({**request.scope, "method": method})[0] is Match.FULL for r in routes)
    ]
    literal = request.app.openapi()["paths"].get(request.url.path)
    if literal is not None:
        served = [method for method in served if method.lower() in literal]
    return [*served, "OPTIONS"]


def _count_rejection(request: Request, code: str) -> None:
    # imported here: this module is imported before an entry point can point
    # prometheus-client at its multiprocess directory
    from app.metrics import record_rejection

    record_rejection(request.method, request.url.path, code)


async def _app_error(request: Request, exc: Exception) -> Any:
    assert isinstance(exc, DomainError)
    status = status_of(exc)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    body = scrub_paths(render(exc), _server_roots(request))
    _count_rejection(request, body.code)
    return _error_response(status, body, headers)


async def _medvec_error(request: Request, exc: Exception) -> Any:
    assert isinstance(exc, MedVecError)
    body = scrub_paths(_medvec_body(exc), _server_roots(request))
    _count_rejection(request, body.code)
    return _error_response(422, body)


async def _request_invalid(request: Request, exc: Exception) -> Any:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")}
        for e in exc.errors()
    ]
    if any(e["type"] == "json_invalid" for e in errors):
        body = ErrorBody(
            code="invalid_json",
            message="the request body is not valid JSON — send a JSON object as the API "
            "reference says",
            detail=errors,
        )
        _count_rejection(request, body.code)
        return _error_response(400, body)
    first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
    where = ".".join(str(p) for p in first["loc"])
    body = ErrorBody(
        code="invalid_request",
        message=f"{where}: {first['msg']} — fix the request as the API reference says",
        detail=errors,
    )
    _count_rejection(request, body.code)
    return _error_response(422, body)


async def _http_error(request: Request, exc: Exception) -> Any:
    assert isinstance(exc, StarletteHTTPException)
    headers = dict(getattr(exc, "headers", None) or {})
    if exc.status_code == 405:
        headers["Allow"] = ", ".join(allowed_methods(request))
        if request.method == "OPTIONS":  # the path exists: say what it serves
            return Response(status_code=204, headers=headers)
    phrase = HTTPStatus(exc.status_code).phrase
    message = exc.detail if isinstance(exc.detail, str) else phrase
    body = ErrorBody(code=f"http_{exc.status_code}", message=message)
    return _error_response(exc.status_code, body, headers or None)


async def _integrity_error(_request: Request, _exc: Exception) -> Any:
    body = ErrorBody(
        code="conflict",
        message="a concurrent request changed the same record — send the request again",
    )
    return _error_response(409, body)


async def _database_unavailable(request: Request, exc: Exception) -> Any:
    """503 with ``Retry-After``: the request's transaction was rolled back, the broken
    connection is dropped from the pool (``pool_pre_ping`` tests the others before
    use), and the same request sent again is served once the database answers."""
    log.warning("database unavailable on %s %s: %s", request.method, request.url.path, exc)
    body = ErrorBody(
        code="database_unavailable",
        message="the registry lost its connection to its database, so this request was "
        f"not completed — send it again in {DATABASE_RETRY_AFTER_S} s",
    )
    return _error_response(503, body, {"Retry-After": str(DATABASE_RETRY_AFTER_S)})


async def _client_gone(_request: Request, _exc: Exception) -> Any:
    """The client hung up mid-body: nobody reads this answer, and nothing is logged as
    a server error (what the request had staged is already cleaned up)."""
    body = ErrorBody(code="client_disconnected", message="the client closed the connection")
    return _error_response(400, body)


def install_error_handlers(app: FastAPI) -> None:
    """Render app errors, core errors, validation errors and HTTP errors as one body."""
    app.add_exception_handler(DomainError, _app_error)
    app.add_exception_handler(IntegrityError, _integrity_error)
    app.add_exception_handler(ClientDisconnect, _client_gone)
    for error in DATABASE_UNAVAILABLE:
        app.add_exception_handler(error, _database_unavailable)
    app.add_exception_handler(MedVecError, _medvec_error)
    app.add_exception_handler(RequestValidationError, _request_invalid)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_middleware(InternalErrorMiddleware)


COMMON_ERRORS: dict[str, str] = {
    "400": "invalid_json (a JSON body that does not parse), client_disconnected",
    "422": "invalid_request (a parameter or body field out of its bounds or type)",
    "500": "internal_error",
    "503": "database_unavailable (the database is out of reach; retry after Retry-After)",
}


def document_common_errors(app: FastAPI) -> None:
    """Add to every operation of the OpenAPI document the errors any route can answer
    (400 for an unparsable JSON or a broken body, 422 for a bad parameter, 500) with the
    ErrorBody schema, replacing FastAPI's default 422 model, which is not what we send."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        spec = build()
        ref = {"$ref": "#/components/schemas/ErrorBody"}
        schemas = spec.setdefault("components", {}).setdefault("schemas", {})
        schemas.setdefault("ErrorBody", ErrorBody.model_json_schema())
        for name in ("HTTPValidationError", "ValidationError"):
            schemas.pop(name, None)
        for path_item in spec.get("paths", {}).values():
            for operation in path_item.values():
                answers = operation.setdefault("responses", {})
                takes_input = "parameters" in operation or "requestBody" in operation
                for status, description in COMMON_ERRORS.items():
                    if status in {"400", "422"} and not takes_input:
                        continue
                    entry = answers.setdefault(status, {"description": ""})
                    content = entry.get("content", {}).get("application/json", {})
                    if content.get("schema", ref) != ref:  # FastAPI's HTTPValidationError
                        entry["description"] = ""
                    entry["content"] = {"application/json": {"schema": ref}}
                    entry["description"] = ", ".join(
                        filter(None, [entry["description"], description])
                    )
        app.openapi_schema = spec
        return spec

    app.openapi = openapi  # type: ignore[method-assign]


def responses(*errors: type[AppError]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` for a route: each status with the ErrorBody model."""
    out: dict[int | str, dict[str, Any]] = {}
    for error in errors:
        entry = out.setdefault(status_of(error), {"model": ErrorBody, "description": ""})
        entry["description"] = ", ".join(filter(None, [entry["description"], error.code]))
    return out


AUTH_ERRORS = (Unauthenticated, Forbidden)
