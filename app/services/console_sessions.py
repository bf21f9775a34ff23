"""Console sessions: sign in with a token, resume from the cookie, sign out.

The browser never keeps the token: signing in checks it and opens a session row; the
cookie holds a random secret whose sha256 names the row. Every request looks the row up
and checks that it has not ended or expired and that its token is still valid, so that
revoking a token or signing out ends the session at once.
"""

from __future__ import annotations

import hmac
import secrets
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db import utcnow
from app.models import ApiToken, ConsoleSession
from app.security import Actor, hash_token
from app.services import audit
from app.services.errors import Unauthenticated
from app.services.hospitals import actor_for, authenticate


def sign_in(
    session: Session, token: str, ip: str | None, ttl: timedelta
) -> tuple[ConsoleSession, str, Actor]:
    """Open a session for ``token``; returns the row, the cookie secret and the actor."""
    actor = authenticate(session, token.strip(), ip)
    assert actor.token_id is not None
    secret = secrets.token_urlsafe(32)
    row = ConsoleSession(
        secret_hash=hash_token(secret),
        token_id=actor.token_id,
        csrf_token=secrets.token_urlsafe(32),
        expires_at=utcnow() + ttl,
        ip=ip,
    )
    session.add(row)
    session.flush()
    audit.record(session, actor, "console.signed_in", target_type="token", target_id=actor.token_id)
    return row, secret, actor


def resume(session: Session, secret: str | None, ip: str | None) -> tuple[ConsoleSession, Actor]:
    """The live session behind a cookie secret and the actor it acts for; 401 otherwise."""
    if not secret:
        raise Unauthenticated("not signed in", hint="sign in at /console/login")
    row = session.scalar(
        select(ConsoleSession).where(ConsoleSession.secret_hash == hash_token(secret))
    )
    if row is None or row.ended_at is not None:
        raise Unauthenticated("the console session has ended", hint="sign in again")
    if row.expires_at <= utcnow():
        raise Unauthenticated("the console session has expired", hint="sign in again")
    token = session.get(ApiToken, row.token_id)
    if token is None or token.revoked_at is not None:
        raise Unauthenticated("the session's token was revoked", hint="sign in with a valid token")
    return row, actor_for(session, token, ip)


def csrf_matches(row: ConsoleSession, submitted: str | None) -> bool:
    return submitted is not None and hmac.compare_digest(row.csrf_token, submitted)


def sign_out(session: Session, row: ConsoleSession, actor: Actor) -> None:
    row.ended_at = utcnow()
    session.flush()
    audit.record(session, actor, "console.signed_out", target_type="token", target_id=row.token_id)
