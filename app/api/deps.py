"""Dependencies as ``Annotated`` aliases: route signatures read as typed data.

``SessionDep`` owns the request's transaction: it commits when the endpoint returns
(before the response is sent), rolls back when it raises, and only after a successful
commit hands deferred jobs to the job queue.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from app.api.state import get_store, request_transaction
from app.config import Settings
from app.errors import Forbidden
from app.jobs import JobQueue, discard_deferred, dispatch_deferred
from app.models import Role
from app.security import Actor, parse_bearer
from app.services.hospitals import authenticate
from app.storage import BlobStore


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_job_queue(request: Request) -> JobQueue:
    queue: JobQueue = request.app.state.job_queue
    return queue


def get_session(request: Request) -> Iterator[Session]:
    with request_transaction(request) as session:
        try:
            yield session
        except BaseException:
            discard_deferred(session)
            raise
    dispatch_deferred(session, request.app.state.job_queue)


async def release_connection(session: Session) -> None:
    """End the request's transaction so far before a long body streams in.

    What ran before (authentication) is committed and the pooled connection goes back
    to the pool for the minutes a large upload may take; the session begins a new
    transaction when it is next used, and ``get_session`` commits that one as usual.
    """
    await run_in_threadpool(session.commit)


SettingsDep = Annotated[Settings, Depends(get_settings)]
StorageDep = Annotated[BlobStore, Depends(get_store)]
JobQueueDep = Annotated[JobQueue, Depends(get_job_queue)]
SessionDep = Annotated[Session, Depends(get_session, scope="function")]


def client_ip(request: Request) -> str | None:
    return request.client.host if request.client else None


def get_actor(request: Request, session: SessionDep) -> Actor:
    """The token's identity; 401 when it is missing, unknown or revoked.

    Authentication may stamp the token's ``last_used_at``: that write is committed here,
    in the thread that made it, and not with the request's work. Otherwise the request
    would hold the database's write lock (SQLite has one) while it waits for its body or
    for a thread-pool thread, and requests blocked on that lock in every pool thread
    would never let it continue: concurrent uploads ended in 503 "database is locked".
    """
    token = parse_bearer(request.headers.get("authorization"))
    actor = authenticate(session, token, client_ip(request))
    session.commit()
    return actor


Principal = Annotated[Actor, Depends(get_actor)]


def require_admin(actor: Principal) -> Actor:
    if actor.role is not Role.ADMIN:
        raise Forbidden("this needs an admin token", hint="ask an admin to do it")
    return actor


def require_hospital(actor: Principal) -> Actor:
    if actor.role is not Role.HOSPITAL or actor.hospital_id is None:
        raise Forbidden(
            "this needs a hospital token: vectors belong to a hospital",
            hint="mint a token for the hospital (POST /api/v1/tokens with role=hospital)",
        )
    return actor


AdminPrincipal = Annotated[Actor, Depends(require_admin)]
HospitalPrincipal = Annotated[Actor, Depends(require_hospital)]
