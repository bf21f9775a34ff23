"""Expiring idle upload sessions in the background of a server process.

The registry and the share holder take uploads with the same resumable protocol, and
each deletes the bytes of sessions left idle past their expiry, every few minutes, for
as long as the application runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from app.storage import BlobStore

log = logging.getLogger(__name__)

#: ``expire(session, store)``: expire what is due, return how many sessions
Expire = Callable[[Session, BlobStore], int]


def sweep_once(makesession: sessionmaker[Session], store: BlobStore, expire: Expire) -> int:
    """One sweep in its own transaction; how many sessions expired."""
    with makesession.begin() as session:
        return expire(session, store)


async def _sweep_forever(
    makesession: sessionmaker[Session], store: BlobStore, expire: Expire, every_s: float
) -> None:
    while True:
        try:
            await run_in_threadpool(sweep_once, makesession, store, expire)
        except Exception:
            log.exception("upload sweep failed; retrying later")
        await asyncio.sleep(every_s)


@contextlib.asynccontextmanager
async def sweeping_uploads(
    makesession: sessionmaker[Session], store: BlobStore, expire: Expire, every_s: float
) -> AsyncIterator[None]:
    """Sweep now and every ``every_s`` seconds while the block runs (an app's lifespan)."""
    task = asyncio.create_task(_sweep_forever(makesession, store, expire, every_s))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
