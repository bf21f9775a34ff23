"""Hospitals, API tokens and authentication."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from sqlalchemy import ColumnElement, exists, select
from sqlalchemy.orm import Session

from app.db import utcnow
from app.jobs import defer_job
from app.models import ApiToken, DataVector, Hospital, Role, VectorStatus
from app.security import Actor, hash_token
from app.services import audit
from app.services.errors import Conflict, InvalidInput, NotFound, Unauthenticated
from app.tasks import SumsRefresh
from medvec.tokens import mint_token

LAST_USED_RESOLUTION = timedelta(minutes=1)


def create_hospital(session: Session, actor: Actor, name: str) -> Hospital:
    name = name.strip()
    if not name:
        raise InvalidInput("hospital name is empty", hint="give a non-empty name")
    if session.scalar(select(exists().where(Hospital.name == name))):
        raise Conflict(f"a hospital named {name!r} already exists", hint="pick another name")
    hospital = Hospital(name=name)
    session.add(hospital)
    session.flush()
    audit.record(
        session, actor, "hospital.created", target_type="hospital", target_id=hospital.id, name=name
    )
    return hospital


def list_hospitals(session: Session) -> list[Hospital]:
    return list(session.scalars(select(Hospital).order_by(Hospital.created_at, Hospital.name)))


def get_hospital(session: Session, hospital_id: str) -> Hospital:
    hospital = session.get(Hospital, hospital_id)
    if hospital is None:
        raise NotFound(f"no hospital {hospital_id}", hint="list them with GET /api/v1/hospitals")
    return hospital


def of_present_hospital() -> ColumnElement[bool]:
    """A filter on ``DataVector`` rows: the vector's hospital was not removed."""
    removed = select(Hospital.id).where(Hospital.removed_at.is_not(None))
    return DataVector.hospital_id.not_in(removed)


def refuse_removed(session: Session, vectors: Sequence[DataVector]) -> None:
    """``InvalidInput`` for the first of ``vectors`` (named by a merge request) whose
    hospital was removed: a removed hospital's vectors are never merged again."""
    removed = set(
        session.scalars(
            select(Hospital.id).where(
                Hospital.id.in_({v.hospital_id for v in vectors}), Hospital.removed_at.is_not(None)
            )
        )
    )
    for vector in vectors:
        if vector.hospital_id in removed:
            raise InvalidInput(
                f"vector {vector.id} belongs to a removed hospital and cannot be merged",
                hint="leave it out of vector_ids",
                vector_id=vector.id,
                hospital_id=vector.hospital_id,
            )


def remove_hospital(
    session: Session, actor: Actor, hospital_id: str, reason: str | None = None
) -> Hospital:
    """Remove a hospital: its tokens are revoked, its vectors stay stored (versions name
    them in their lineage) but no default or automatic merge takes them any more, and the
    running sums of every base it held a current vector of are refreshed without it.
    Removing a removed hospital changes nothing."""
    hospital = session.get(Hospital, hospital_id, with_for_update=True)
    if hospital is None:
        raise NotFound(f"no hospital {hospital_id}", hint="list them with GET /api/v1/hospitals")
    if hospital.removed_at is not None:
        return hospital
    hospital.removed_at = utcnow()
    active = select(ApiToken.id).where(
        ApiToken.hospital_id == hospital.id, ApiToken.revoked_at.is_(None)
    )
    revoked = [revoke_token(session, actor, token_id).id for token_id in session.scalars(active)]
    current = select(DataVector.base_id).where(
        DataVector.hospital_id == hospital.id, DataVector.status == VectorStatus.VALIDATED
    )
    bases = sorted(set(session.scalars(current)))
    session.flush()
    audit.record(
        session,
        actor,
        "hospital.removed",
        target_type="hospital",
        target_id=hospital.id,
        name=hospital.name,
        reason=reason,
        revoked_tokens=revoked,
        bases=bases,
    )
    for base_id in bases:
        defer_job(session, SumsRefresh(base_id=base_id))
    return hospital


def create_token(
    session: Session, actor: Actor, *, name: str, role: Role, hospital_id: str | None
) -> tuple[ApiToken, str]:
    """Mint a token; returns the row and the secret, which is never stored or shown again."""
    if role is Role.HOSPITAL and not hospital_id:
        raise InvalidInput("a hospital token needs hospital_id", hint="create the hospital first")
    if role is Role.ADMIN and hospital_id is not None:
        raise InvalidInput("an admin token belongs to no hospital", hint="leave hospital_id out")
    if hospital_id and get_hospital(session, hospital_id).removed_at is not None:
        raise Conflict(
            f"hospital {hospital_id} was removed; it gets no new tokens",
            hint="create a new hospital if the site joins again",
        )
    secret = mint_token()
    token = ApiToken(name=name, token_hash=hash_token(secret), role=role, hospital_id=hospital_id)
    session.add(token)
    session.flush()
    audit.record(
        session,
        actor,
        "token.created",
        target_type="token",
        target_id=token.id,
        name=name,
        role=role.value,
        hospital_id=hospital_id,
    )
    return token, secret


def list_tokens(session: Session) -> list[ApiToken]:
    return list(session.scalars(select(ApiToken).order_by(ApiToken.created_at)))


def revoke_token(session: Session, actor: Actor, token_id: str) -> ApiToken:
    token = session.get(ApiToken, token_id)
    if token is None:
        raise NotFound(f"no token {token_id}", hint="list them with GET /api/v1/tokens")
    if token.revoked_at is None:
        token.revoked_at = utcnow()
        session.flush()
        audit.record(session, actor, "token.revoked", target_type="token", target_id=token.id)
    return token


def authenticate(session: Session, secret: str | None, ip: str | None) -> Actor:
    """The actor behind a bearer token; 401 when it is missing, unknown or revoked."""
    if not secret:
        raise Unauthenticated(
            "no bearer token in the request",
            hint="send 'Authorization: Bearer <token>' (the CLI: `medvec login`)",
        )
    token = session.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(secret)))
    if token is None:
        raise Unauthenticated("the token is not valid", hint="ask an admin for a token")
    if token.revoked_at is not None:
        raise Unauthenticated("the token was revoked", hint="ask an admin for a new token")
    return actor_for(session, token, ip)


def actor_for(session: Session, token: ApiToken, ip: str | None) -> Actor:
    """The actor of a valid ``token``; notes its use (to the minute)."""
    now = utcnow()
    if token.last_used_at is None or now - token.last_used_at > LAST_USED_RESOLUTION:
        token.last_used_at = now
        session.flush()
    hospital = session.get(Hospital, token.hospital_id) if token.hospital_id else None
    return Actor(
        name=f"token:{token.id}",
        role=token.role,
        token_id=token.id,
        token_name=token.name,
        hospital_id=token.hospital_id,
        hospital_name=hospital.name if hospital else None,
        ip=ip,
    )


def ensure_bootstrap_admin(session: Session, secret: str, name: str = "bootstrap-admin") -> bool:
    """Insert ``secret`` as an admin token when no usable admin token exists; True if added."""
    digest = hash_token(secret)
    if session.scalar(select(exists().where(ApiToken.token_hash == digest))):
        return False
    active_admin = exists().where(ApiToken.role == Role.ADMIN, ApiToken.revoked_at.is_(None))
    if session.scalar(select(active_admin)):
        return False
    token = ApiToken(name=name, token_hash=digest, role=Role.ADMIN, hospital_id=None)
    session.add(token)
    session.flush()
    audit.record(
        session,
        Actor.system("bootstrap"),
        "token.created",
        target_type="token",
        target_id=token.id,
        name=name,
        role=Role.ADMIN.value,
    )
    return True
