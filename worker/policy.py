"""The auto-merge policy: merge a base once K new validated vectors arrived since its last
merge, and (optionally) on a schedule whenever anything new arrived.

Off unless ``MEDVEC_AUTO_MERGE=true`` (the demo turns it on). It runs when a vector
is accepted (the registry's ``medvec.vectors.accepted`` job) and on Celery beat.
Asking twice is harmless: a merge request with the same inputs finds its job.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.db import utcnow
from app.errors import AppError
from app.models import DataVector, MergeJob, VectorStatus
from app.schemas.merges import MergeCreate
from app.security import Actor
from app.services.merges import request_merge
from worker.config import WorkerSettings

log = logging.getLogger(__name__)

ACTOR = Actor.system("auto-merge")


@dataclass(frozen=True)
class BaseActivity:
    base_id: str
    last_merge_at: datetime | None
    new_vectors: int


def activity(session: Session, base_id: str) -> BaseActivity:
    """How many validated vectors arrived for ``base_id`` since its last merge request."""
    last = session.scalar(select(func.max(MergeJob.created_at)).where(MergeJob.base_id == base_id))
    query = select(func.count(DataVector.id)).where(
        DataVector.base_id == base_id, DataVector.status == VectorStatus.VALIDATED
    )
    if last is not None:
        query = query.where(DataVector.created_at > last)
    return BaseActivity(base_id, last, int(session.scalar(query) or 0))


def is_due(state: BaseActivity, settings: WorkerSettings, now: datetime) -> bool:
    if state.new_vectors >= settings.auto_merge_k:
        return True
    every = settings.auto_merge_every_s
    if every is None or state.new_vectors == 0:
        return False
    return state.last_merge_at is None or now - state.last_merge_at >= timedelta(seconds=every)


def bases_with_vectors(session: Session) -> list[str]:
    query = (
        select(DataVector.base_id)
        .where(DataVector.status == VectorStatus.VALIDATED)
        .distinct()
        .order_by(DataVector.base_id)
    )
    return list(session.scalars(query))


def check_policy(
    session: Session,
    settings: WorkerSettings,
    *,
    base_id: str | None = None,
    now: datetime | None = None,
) -> list[str]:
    """Request the merges that are due (for ``base_id`` or every base); the new job ids.

    The caller commits and then sends the deferred tasks.
    """
    if not settings.auto_merge:
        return []
    now = now or utcnow()
    created: list[str] = []
    for candidate in [base_id] if base_id else bases_with_vectors(session):
        state = activity(session, candidate)
        if not is_due(state, settings, now):
            continue
        request = MergeCreate(
            base_id=candidate,
            strategy=settings.auto_merge_strategy,
            params=settings.auto_merge_params,
        )
        try:
            job, queued = request_merge(session, request, actor=ACTOR)
        except AppError as exc:
            log.warning("auto-merge of base %s skipped: %s", candidate, exc.message)
            continue
        if queued:
            created.append(job.id)
            log.info(
                "auto-merge: job %s for base %s (%d new)", job.id, candidate, state.new_vectors
            )
    return created
