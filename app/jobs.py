"""Background jobs, enqueued only after the transaction that made them needed commits.

Services call :func:`defer_job` on their session; whoever owns the transaction (the
request's session dependency, a worker's ``session_scope``) calls
:func:`dispatch_deferred` after a successful commit. A rollback discards the jobs, so a
worker never sees an id the database does not hold.

``app.state.job_queue`` holds the :class:`JobQueue`; ``create_app(settings, job_queue=...)``
sets it, and the default (:func:`default_job_queue`) logs and drops jobs, which is right
for a registry that runs without workers.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy.orm import Session

from app.config import Settings

if TYPE_CHECKING:
    from app.tasks import Task

log = logging.getLogger(__name__)

DEFERRED_KEY = "medvec.deferred_jobs"


class JobQueue(Protocol):
    def enqueue(self, task: str, payload: dict[str, Any]) -> None:
        """Send one job (JSON-able ids only) to the workers."""
        ...


@dataclass
class NullJobQueue:
    """Keeps nothing running: logs each job. ``sent`` records them for inspection."""

    sent: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def enqueue(self, task: str, payload: dict[str, Any]) -> None:
        log.info("no job queue configured; dropping %s %s", task, payload)
        self.sent.append((task, payload))


def default_job_queue(settings: Settings) -> JobQueue:
    """The queue a registry uses when ``create_app`` is given none."""
    del settings
    return NullJobQueue()


def defer_job(session: Session, task: Task) -> None:
    """Ask for ``task`` (``app.tasks``) to be sent once ``session``'s transaction has
    committed."""
    session.info.setdefault(DEFERRED_KEY, []).append((task.name, task.kwargs()))


def discard_deferred(session: Session) -> None:
    session.info.pop(DEFERRED_KEY, None)


def dispatch_deferred(session: Session, queue: JobQueue) -> None:
    """Send the jobs deferred on ``session``; call right after a successful commit."""
    for task, payload in session.info.pop(DEFERRED_KEY, []):
        try:
            queue.enqueue(task, payload)
        except Exception:  # the commit stands; a sweeper re-sends queued work
            log.exception("could not enqueue %s %s", task, payload)
