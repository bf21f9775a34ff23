"""Mounting the console on the app: its pages, its stylesheet, their security headers, and
its refusals rendered as pages instead of the API's JSON."""

from __future__ import annotations

import inspect

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles

from app.console.deps import CsrfRejected, SignInRequired
from app.console.headers import ConsoleHeaders
from app.console.routes import NO_STORE, router, see_other
from app.errors import AppError, Forbidden, status_of
from app.templating import render

__all__ = ["console_error", "install_console"]


def install_console(app: FastAPI) -> None:
    """Mount the console (its pages, its stylesheet, their security headers) and render
    its refusals as pages, not JSON."""
    app.include_router(router)
    static = StaticFiles(packages=[("app.console", "static")])
    app.mount(f"{router.prefix}/static", static, name="console-static")
    app.add_middleware(ConsoleHeaders)

    async def sign_in_required(_request: Request, _exc: Exception) -> Response:
        return see_other("/console/login")

    async def csrf_rejected(request: Request, _exc: Exception) -> Response:
        html = render("console/error.html", viewer=None, actor=None, csrf_token="", notice=None,
                      path=request.url.path, title="Form refused",
                      message="The form did not carry this session's CSRF token; reload the "
                      "page and submit it again.")  # fmt: skip
        return HTMLResponse(html, status_code=403, headers=NO_STORE)

    api_error = app.exception_handlers[AppError]

    async def app_error(request: Request, exc: Exception) -> Response:
        if isinstance(exc, AppError) and request.url.path.startswith(router.prefix):
            return console_error(request, exc)
        response = api_error(request, exc)
        return await response if inspect.isawaitable(response) else response

    app.add_exception_handler(SignInRequired, sign_in_required)
    app.add_exception_handler(CsrfRejected, csrf_rejected)
    app.add_exception_handler(AppError, app_error)


def console_error(request: Request, exc: AppError) -> HTMLResponse:
    """An application error on a console page, as a page."""
    title = "Not allowed" if isinstance(exc, Forbidden) else "Not possible"
    html = render("console/error.html", viewer=None, actor=None, csrf_token="", notice=None,
                  path=request.url.path, title=title, message=exc.text)  # fmt: skip
    return HTMLResponse(html, status_code=status_of(exc), headers=NO_STORE)
