"""Dependencies the registry and the share holder share: what ``create_app`` put on
``app.state``, and the refusal of NUL in parameters (the share holder imports this, not
the registry's ``app.api.deps``)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy.orm import Session

from app.storage import BlobStore

__all__ = ["get_store", "reject_nul_parameters", "request_transaction"]


def reject_nul_parameters(request: Request) -> None:
    """Refuse NUL in a path or query parameter as a 422 (PostgreSQL text cannot hold it)."""
    places = [("path", request.path_params), ("query", dict(request.query_params))]
    errors = [
        {
            "loc": [where, name],
            "msg": "must not contain NUL (\\u0000) characters",
            "type": "value_error",
        }
        for where, params in places
        for name, value in params.items()
        if "\x00" in value
    ]
    if errors:
        raise RequestValidationError(errors)


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
