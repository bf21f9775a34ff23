"""The auto-merge policy: merge a base once K new validated vectors arrived since its last
merge, and (optionally) on a schedule whenever anything new arrived.

Off unless ``MEDVEC_AUTO_MERGE=true`` (the demo turns it on). It runs when a vector
is accepted (the registry's ``medvec.vectors.accepted`` job, after screening) and on
Celery beat. With screening on, a base waits while any of its validated vectors is
not screened yet: the merge would otherwise take a vector screening may quarantine.
Asking twice is harmless: a merge request with the same inputs finds its job.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.db import utcnow
from app.models import DataVector, MergeJob, VectorStatus
from app.security import Actor
from app.services.errors import DomainError
from app.services.hospitals import of_present_hospital
from app.services.merges import MergeRequest, request_merge
from medvec.merging.policy import merge_due
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
        DataVector.base_id == base_id,
        DataVector.status == VectorStatus.VALIDATED,
        of_present_hospital(),
    )
    if last is not None:
        query = query.where(DataVector.created_at > last)
    return BaseActivity(base_id, last, int(session.scalar(query) or 0))


def unscreened(session: Session, base_id: str) -> int:
    """Validated vectors of ``base_id`` that screening has not looked at yet."""
    query = select(func.count(DataVector.id)).where(
        DataVector.base_id == base_id,
        DataVector.status == VectorStatus.VALIDATED,
        DataVector.screened_at.is_(None),
        of_present_hospital(),
    )
    return int(session.scalar(query) or 0)


def screened_ids(session: Session, base_id: str) -> list[str]:
    """The validated vectors of ``base_id`` that screening has passed, oldest first."""
    query = select(DataVector.id).where(
        DataVector.base_id == base_id,
        DataVector.status == VectorStatus.VALIDATED,
        DataVector.screened_at.is_not(None),
        of_present_hospital(),
    )
    return list(session.scalars(query.order_by(DataVector.created_at, DataVector.id)))


def is_due(state: BaseActivity, settings: WorkerSettings, now: datetime) -> bool:
    """``medvec.merging.policy.merge_due`` with the worker's K and schedule."""
    last = state.last_merge_at
    return merge_due(
        state.new_vectors,
        None if last is None else (now - last).total_seconds(),
        k=settings.auto_merge_k,
        every_s=settings.auto_merge_every_s,
    )


def bases_with_vectors(session: Session) -> list[str]:
    query = (
        select(DataVector.base_id)
        .where(DataVector.status == VectorStatus.VALIDATED, of_present_hospital())
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
        chosen: list[str] | None = None
        if settings.screening_enabled and unscreened(session, candidate):
            # merge what screening has passed; the vectors still being screened wait for
            # the next merge (waiting for all of them starves the policy while hospitals
            # keep pushing, as the demo's hospitals do)
            chosen = screened_ids(session, candidate)
            if len(chosen) < settings.auto_merge_k:
                log.info("auto-merge of base %s waits for screening", candidate)
                continue
        request = MergeRequest(
            base_id=candidate,
            strategy=settings.auto_merge_strategy,
            params=settings.auto_merge_params,
            vector_ids=chosen,
        )
        try:
            job, queued = request_merge(session, request, actor=ACTOR)
        except DomainError as exc:
            log.warning("auto-merge of base %s skipped: %s", candidate, exc.message)
            continue
        if queued:
            created.append(job.id)
            log.info(
                "auto-merge: job %s for base %s (%d new)", job.id, candidate, state.new_vectors
            )
    return created
