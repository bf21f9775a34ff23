"""Re-send work that lost its message: jobs committed ``queued`` whose task never reached a
broker (a crash or a broker outage between commit and send), and ``running`` jobs whose
worker died past the broker's visibility timeout. Redelivery is safe: every job is
idempotent, so a task sent twice does its work once.

Also remove what crashes leave in the blob store's staging area: a merge killed while
writing, a one-shot upload cut off mid-body. A file goes once it has not been written
for ``staging_max_age_s`` and no open upload session owns it (a resumable upload may
rest for longer between parts). Files being written are young by their mtime, so a
live merge or upload never loses its file.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db import utcnow
from app.jobs import defer_job
from app.models import JobStatus, MergeJob, UploadSession, UploadStatus
from app.services.merges import task_for
from app.storage import BlobStore
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


def stale_staging_files(
    session: Session, store: BlobStore, settings: WorkerSettings, now: float | None = None
) -> list[str]:
    """Remove staging files older than ``staging_max_age_s`` that no open upload owns."""
    from app.services.uploads import part_name

    open_sessions = select(UploadSession.id).where(UploadSession.status == UploadStatus.OPEN)
    owned = {part_name(upload_id) for upload_id in session.scalars(open_sessions)}
    cutoff = (time.time() if now is None else now) - settings.staging_max_age_s
    removed = []
    for path in store.staging_files():
        try:
            old = path.stat().st_mtime < cutoff
        except FileNotFoundError:  # committed or removed meanwhile
            continue
        if old and path.name not in owned:
            path.unlink(missing_ok=True)
            removed.append(path.name)
    return removed
