"""One transaction per unit of work; jobs it deferred are sent only after it commits."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy.orm import Session, sessionmaker

from app.jobs import JobQueue, discard_deferred, dispatch_deferred


@contextmanager
def session_scope(
    sessions: sessionmaker[Session], queue: JobQueue | None = None
) -> Iterator[Session]:
    """A session whose transaction commits when the block ends and rolls back if it raises.

    Jobs deferred on the session (``app.jobs.defer_job``) go to ``queue`` after the
    commit and are dropped on rollback.
    """
    session = sessions()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        discard_deferred(session)
        raise
    finally:
        session.close()
    if queue is not None:
        dispatch_deferred(session, queue)
