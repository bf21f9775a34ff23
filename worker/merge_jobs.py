"""A merge job's state changes outside a successful run: failed, queued again for a retry,
waiting for a service it needs; each in a transaction of its own, on the locked row."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.orm import Session, sessionmaker

from app.db import utcnow
from app.models import JobStatus, MergeJob
from app.security import Actor
from app.services import audit
from worker.session import session_scope

__all__ = ["WORKER", "fail", "mark_failed", "mark_queued", "mark_waiting"]

WORKER = Actor.system("worker")


def fail(job: MergeJob, reason: str) -> None:
    """End ``job`` ``failed`` with ``reason`` (in the caller's transaction)."""
    job.status = JobStatus.FAILED
    job.error = reason[:4000]
    job.finished_at = utcnow()
    job.waiting_since = job.retry_at = None


def mark_failed(sessions: sessionmaker[Session], job_id: str, reason: str) -> None:
    """Terminal failure: the job ends ``failed`` with ``reason`` (unless it already succeeded)."""
    with session_scope(sessions) as session:
        job = session.get(MergeJob, job_id, with_for_update=True)
        if job is None or job.status is JobStatus.SUCCEEDED:
            return
        fail(job, reason)
        audit.record(
            session,
            WORKER,
            "merge.failed",
            target_type="merge_job",
            target_id=job_id,
            error=job.error,
        )


def mark_queued(sessions: sessionmaker[Session], job_id: str, reason: str) -> None:
    """A transient failure: back to ``queued`` with the reason, for the retry to pick up."""
    with session_scope(sessions) as session:
        job = session.get(MergeJob, job_id, with_for_update=True)
        if job is not None and job.status is JobStatus.RUNNING:
            job.status = JobStatus.QUEUED
            job.error = f"retrying after: {reason}"[:4000]


def mark_waiting(
    sessions: sessionmaker[Session], job_id: str, reason: str, *, first_s: float, longest_s: float
) -> float | None:
    """The job waits for a service it needs (a secure merge's share holder): back to
    ``queued`` until ``retry_at``, ``reason`` and the wait in ``error``, and this delivery
    not counted in ``attempts`` (it did not die). Returns the delay before the next try:
    ``first_s`` at first, then as long as the job has waited so far (so each wait about
    doubles), at most ``longest_s``; ``None`` when the job no longer runs."""
    with session_scope(sessions) as session:
        job = session.get(MergeJob, job_id, with_for_update=True)
        if job is None or job.status is not JobStatus.RUNNING:
            return None
        now = utcnow()
        since = job.waiting_since or now
        delay = min(longest_s, max(first_s, (now - since).total_seconds()))
        job.status = JobStatus.QUEUED
        job.attempts = max(0, job.attempts - 1)
        job.waiting_since = since
        job.retry_at = now + timedelta(seconds=delay)
        job.error = (
            f"{reason}; waiting since {since:%Y-%m-%d %H:%M:%S} UTC, retrying in {delay:.3g} s"
        )[:4000]
        return delay
