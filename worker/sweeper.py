"""Re-send work that lost its message: jobs committed ``queued`` whose task never reached a
broker (a crash or a broker outage between commit and send), and ``running`` jobs whose
worker died past the broker's visibility timeout. Redelivery is safe: every job is
idempotent, so a task sent twice does its work once.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db import utcnow
from app.jobs import defer_job
from app.models import JobStatus, MergeJob
from app.services.merges import task_for
from worker.config import WorkerSettings


def stalled_jobs(
    session: Session, settings: WorkerSettings, now: datetime, *, everything: bool = False
) -> list[MergeJob]:
    """Jobs to re-send; ``everything`` takes every unfinished job (an embedded worker's start,
    when its in-memory queue is known to be empty)."""
    unfinished = select(MergeJob).where(MergeJob.status.in_([JobStatus.QUEUED, JobStatus.RUNNING]))
    jobs = list(session.scalars(unfinished.with_for_update()))
    if everything:
        return jobs
    queued_before = now - timedelta(seconds=settings.stale_queued_s)
    running_before = now - timedelta(seconds=settings.visibility_timeout_s * 1.5)
    return [
        job
        for job in jobs
        if (job.status is JobStatus.QUEUED and job.updated_at < queued_before)
        or (job.status is JobStatus.RUNNING and job.updated_at < running_before)
    ]


def sweep(session: Session, settings: WorkerSettings, *, everything: bool = False) -> list[str]:
    """Defer the tasks of stalled jobs on ``session``; the ids re-sent."""
    now = utcnow()
    jobs = stalled_jobs(session, settings, now, everything=everything)
    for job in jobs:
        job.updated_at = now
        defer_job(session, task_for(job), job_id=job.id)
    return [job.id for job in jobs]
