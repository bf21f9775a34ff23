"""Re-send work that lost its message: jobs, evaluations and base verifications committed
``queued`` (``verifying``) whose
task never reached a broker (a crash or a broker outage between commit and send, an
in-memory queue that died with its process; a job waiting for the share holder counts
from its ``retry_at``), vectors never screened, ``running`` jobs
whose worker died past the broker's visibility timeout, and ``running`` evaluations
past their lease (the worker that took them was killed). Redelivery is safe: every job
and evaluation is idempotent, so a task sent twice does its work once, and each counts
its deliveries (``attempts``) to end ``failed`` after ``max_attempts``; screening a
vector twice finds it screened.

Also remove what crashes leave in the blob store's staging area: a merge killed while
writing, a one-shot upload cut off mid-body. A file goes once it has not been written
for ``staging_max_age_s`` and no open upload session owns it (a resumable upload may
rest for longer between parts). Files being written are young by their mtime, so a
live merge or upload never loses its file.

And remove orphan blobs: a blob is renamed into place before its row commits, so a
process killed in between leaves a blob no row names. A client that sends the same bytes
again claims it (nothing accepted is lost); one nobody stored or claimed for
``staging_max_age_s`` is deleted (see :meth:`app.storage.LocalBlobStore.remove_orphan`).
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db import utcnow
from app.jobs import defer_job
from app.models import (
    DataVector,
    Evaluation,
    EvaluationStatus,
    JobStatus,
    MergeJob,
    RunningSum,
    UploadSession,
    UploadStatus,
    VectorStatus,
)
from app.services.bases import unverified_bases
from app.services.integrity import named_blobs
from app.storage import BlobStore
from app.tasks import BaseVerify, EvaluateRun, VectorAccepted, merge_task
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
        # a job waiting for the share holder is due at retry_at, not when it was queued
        if (job.status is JobStatus.QUEUED and (job.retry_at or job.updated_at) < queued_before)
        or (job.status is JobStatus.RUNNING and job.updated_at < running_before)
    ]


def stalled_evaluations(
    session: Session, settings: WorkerSettings, now: datetime, *, everything: bool = False
) -> list[Evaluation]:
    """Evaluations to re-send: queued too long, or running past their lease;
    ``everything`` takes every unfinished one (as for :func:`stalled_jobs`)."""
    unfinished = select(Evaluation).where(
        Evaluation.status.in_([EvaluationStatus.QUEUED, EvaluationStatus.RUNNING])
    )
    rows = list(session.scalars(unfinished.with_for_update()))
    if everything:
        return rows
    queued_before = now - timedelta(seconds=settings.stale_queued_s)

    def stalled(row: Evaluation) -> bool:
        if row.status is EvaluationStatus.QUEUED:
            return row.updated_at < queued_before
        return row.lease_expires_at is None or row.lease_expires_at < now

    return [row for row in rows if stalled(row)]


def unscreened_vectors(
    session: Session, settings: WorkerSettings, now: datetime, *, everything: bool = False
) -> list[str]:
    """Validated vectors whose screening never ran (its job was lost), older than
    ``stale_queued_s`` unless ``everything``; none when screening is off."""
    if not settings.screening_enabled:
        return []
    query = select(DataVector.id).where(
        DataVector.status == VectorStatus.VALIDATED, DataVector.screened_at.is_(None)
    )
    if not everything:
        query = query.where(
            DataVector.created_at < now - timedelta(seconds=settings.stale_queued_s)
        )
    return list(session.scalars(query.order_by(DataVector.created_at)))


def sweep(session: Session, settings: WorkerSettings, *, everything: bool = False) -> list[str]:
    """Defer the tasks of stalled jobs and evaluations on ``session``; the ids re-sent.

    A re-sent evaluation goes back to ``queued`` (its lease gone): it waits for a worker
    again, and its ``attempts`` keep counting the deliveries that died.
    """
    now = utcnow()
    jobs = stalled_jobs(session, settings, now, everything=everything)
    for job in jobs:
        job.updated_at = now
        defer_job(session, merge_task(job))
    evaluations = stalled_evaluations(session, settings, now, everything=everything)
    for row in evaluations:
        row.status, row.lease_expires_at, row.updated_at = EvaluationStatus.QUEUED, None, now
        task = EvaluateRun(
            version_id=row.version_id, benchmark_id=row.benchmark_id, split=row.split
        )
        defer_job(session, task)
    vectors = unscreened_vectors(session, settings, now, everything=everything)
    for vector_id in vectors:
        defer_job(session, VectorAccepted(vector_id=vector_id))
    registered_before = None if everything else now - timedelta(seconds=settings.stale_queued_s)
    bases = unverified_bases(session, registered_before)
    for base_id in bases:
        defer_job(session, BaseVerify(base_id=base_id))
    return [job.id for job in jobs] + [row.id for row in evaluations] + vectors + bases


def sums_due(session: Session, every_s: float, now: datetime | None = None) -> list[str]:
    """Bases whose running sums were not compared with a full recompute for ``every_s``."""
    cutoff = (now or utcnow()) - timedelta(seconds=every_s)
    query = select(RunningSum.base_id).where(
        (RunningSum.checked_at.is_(None)) | (RunningSum.checked_at < cutoff)
    )
    return sorted(set(session.scalars(query)))


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


def orphan_blobs(
    session: Session, store: BlobStore, settings: WorkerSettings, now: float | None = None
) -> list[str]:
    """Remove blobs no row names that were not stored or claimed for ``staging_max_age_s``."""
    on_disk = store.iter_blobs()  # before the rows: a blob committed in between is named
    named = named_blobs(session)
    cutoff = (time.time() if now is None else now) - settings.staging_max_age_s
    orphans = [sha256 for sha256 in on_disk if sha256 not in named]
    return [sha256 for sha256 in orphans if store.remove_orphan(sha256, cutoff)]
