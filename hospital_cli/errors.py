"""Errors the CLI knows, and how each becomes one line on stderr plus an exit code."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
from pydantic import ValidationError

from medvec.errors import MedVecError

EXIT_ERROR = 1
EXIT_UNREACHABLE = 3
EXIT_AUTH = 4
EXIT_NOT_FOUND = 5
EXIT_REJECTED = 6


class CliError(MedVecError):
    """A problem the user can fix: bad option, missing file, not logged in."""

    code = "cli_error"
    exit_code = EXIT_ERROR


class BaseRejectedError(CliError):
    """A worker found that a registered base's weights do not build its architecture."""

    code = "base_rejected"
    exit_code = EXIT_REJECTED


class NotLoggedInError(CliError):
    code = "not_logged_in"
    exit_code = EXIT_AUTH


class ApiError(MedVecError):
    """The registry answered with an error body ``{"code", "message", "detail"}``."""

    def __init__(
        self, status: int, code: str, message: str, detail: Any = None, *, hint: str | None = None
    ) -> None:
        super().__init__(message, hint=hint)
        self.status = status
        self.code = code
        self.detail = detail

    @property
    def exit_code(self) -> int:
        if self.status in (401, 403):
            return EXIT_AUTH
        if self.status == 404:
            return EXIT_NOT_FOUND
        if self.status == 422:
            return EXIT_REJECTED
        return EXIT_ERROR

    def __str__(self) -> str:
        text = f"registry refused ({self.status} {self.code}): {self.message}"
        return f"{text} ({self.hint})" if self.hint else text


def _api(exc: ApiError) -> tuple[str, int]:
    if exc.status == 401:
        return (
            f"{exc.message} — the token was refused; run `medvec login` with a valid token",
            EXIT_AUTH,
        )
    return str(exc), exc.exit_code


def _connect(exc: httpx.TransportError) -> tuple[str, int]:
    url = exc.request.url if exc._request is not None else "the registry"
    return (
        f"cannot reach {url}: {exc or type(exc).__name__} — check the server URL "
        "(`medvec whoami`) and that the registry is running",
        EXIT_UNREACHABLE,
    )


def _invalid(exc: ValidationError) -> tuple[str, int]:
    problems = "; ".join(
        f"{'.'.join(str(part) for part in error['loc']) or 'value'}: {error['msg']}"
        for error in exc.errors()
    )
    return f"invalid setting — {problems}", EXIT_ERROR


ERROR_MAPPINGS: dict[type[BaseException], Callable[[Any], tuple[str, int]]] = {
    ApiError: _api,
    ValidationError: _invalid,
    CliError: lambda e: (str(e), e.exit_code),
    MedVecError: lambda e: (str(e), EXIT_ERROR),
    httpx.TransportError: _connect,
    FileNotFoundError: lambda e: (
        f"file not found: {e.filename or e} — check the path",
        EXIT_ERROR,
    ),
    PermissionError: lambda e: (f"permission denied: {e.filename or e}", EXIT_ERROR),
    OSError: lambda e: (f"{e}", EXIT_ERROR),
}


def one_line(text: str) -> str:
    """Collapse whitespace and line breaks: every failure is a single line on stderr."""
    return " ".join(text.split())


def format_known_exception(exc: BaseException) -> tuple[str, int] | None:
    """One line and an exit code for an error the CLI expects, ``None`` for a bug."""
    for exc_type, formatter in ERROR_MAPPINGS.items():
        if isinstance(exc, exc_type):
            message, code = formatter(exc)
            return one_line(message), code
    return None
