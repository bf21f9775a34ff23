"""Dependencies the registry and the share holder share: what ``create_app`` put on
``app.state`` (the share holder imports this, not the registry's ``app.api.deps``)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from fastapi import Request
from sqlalchemy.orm import Session

from app.storage import BlobStore

__all__ = ["get_store", "request_transaction"]


def get_store(request: Request) -> BlobStore:
    store: BlobStore = request.app.state.store
    return store


@contextmanager
def request_transaction(request: Request) -> Iterator[Session]:
    """A session from the app's sessionmaker whose transaction commits when the block
    ends and rolls back when it raises; closed either way."""
    session: Session = request.app.state.sessionmaker()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
