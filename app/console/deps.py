"""The console's identity: the session cookie, the signed-in viewer, CSRF on forms.

The cookie is HttpOnly, SameSite=Strict, Secure over HTTPS, signed with
``console_secret_key`` (itsdangerous), and names a server-side session
(``app.services.console_sessions``) that is checked on every request.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Form, Request
from itsdangerous import BadSignature, Signer

from app.api.deps import SessionDep, client_ip
from app.config import Settings
from app.errors import Unauthenticated
from app.models import ConsoleSession
from app.security import Actor
from app.services import console_sessions

COOKIE = "medvec_console"
LOGIN_COOKIE = "medvec_console_login"
"""Double-submit cookie of the sign-in form, which comes before any session exists."""


class SignInRequired(Exception):
    """The request has no live console session: the browser goes to the sign-in page."""


class CsrfRejected(Exception):
    """A form came without this session's CSRF token."""


def make_signer(settings: Settings) -> Signer:
    key = settings.console_secret_key
    secret = key.get_secret_value() if key is not None else secrets.token_urlsafe(32)
    return Signer(secret, salt="medvec-console-session")


def signer(request: Request) -> Signer:
    value: Signer = request.app.state.console_signer
    return value


def cookie_secret(request: Request) -> str | None:
    raw = request.cookies.get(COOKIE)
    if not raw:
        return None
    try:
        return signer(request).unsign(raw).decode()
    except BadSignature:
        return None


@dataclass(frozen=True)
class Viewer:
    actor: Actor
    row: ConsoleSession

    @property
    def csrf_token(self) -> str:
        return self.row.csrf_token


def get_viewer(request: Request, session: SessionDep) -> Viewer:
    try:
        row, actor = console_sessions.resume(session, cookie_secret(request), client_ip(request))
    except Unauthenticated as exc:
        raise SignInRequired(exc.message) from exc
    return Viewer(actor, row)


ViewerDep = Annotated[Viewer, Depends(get_viewer)]


def checked_viewer(viewer: ViewerDep, csrf_token: Annotated[str | None, Form()] = None) -> Viewer:
    """The viewer of a form post, which must carry the session's CSRF token."""
    if not console_sessions.csrf_matches(viewer.row, csrf_token):
        raise CsrfRejected()
    return viewer


FormViewer = Annotated[Viewer, Depends(checked_viewer)]
