"""Tokens of the share holder: minted once, stored as sha256, checked per request."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from aggregator.models import AggRole, AggToken
from app.security import hash_token
from app.services.errors import Forbidden, Unauthenticated
from medvec.tokens import mint_token


@dataclass(frozen=True)
class AggActor:
    """Who is calling: a token's name and role (hospital tokens are named for the hospital)."""

    name: str
    role: AggRole
    token_id: str | None = None


def authenticate(session: Session, secret: str | None) -> AggActor:
    if not secret:
        raise Unauthenticated(
            "no bearer token in the request", hint="send 'Authorization: Bearer <token>'"
        )
    token = session.scalar(select(AggToken).where(AggToken.token_hash == hash_token(secret)))
    if token is None or token.revoked_at is not None:
        raise Unauthenticated(
            "the token is not valid here", hint="ask the share holder's operator for a token"
        )
    return AggActor(name=token.name, role=token.role, token_id=token.id)


def require(actor: AggActor, role: AggRole) -> AggActor:
    if actor.role is not role:
        raise Forbidden(f"this needs a {role.value} token of the share holder")
    return actor


def create_token(session: Session, name: str, role: AggRole) -> tuple[AggToken, str]:
    """A new token for ``name``; the secret is returned once and only its hash is stored."""
    secret = mint_token()
    token = AggToken(name=name, role=role, token_hash=hash_token(secret))
    session.add(token)
    session.flush()
    return token, secret


def ensure_bootstrap_admin(session: Session, secret: str) -> bool:
    digest = hash_token(secret)
    if session.scalar(select(AggToken).where(AggToken.token_hash == digest)) is not None:
        return False
    session.add(AggToken(name="bootstrap-admin", role=AggRole.ADMIN, token_hash=digest))
    session.flush()
    return True
