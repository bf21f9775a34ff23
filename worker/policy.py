"""The auto-merge policy: merge the current base once K new validated vectors of it
arrived since its last merge, and (optionally) on a schedule whenever anything new arrived.

On by default (``MEDVEC_AUTO_MERGE=false`` leaves every merge to an admin): hospitals that
push whenever they like get versions without anyone asking. It runs when a vector
is accepted (the registry's ``medvec.vectors.accepted`` job, after screening) and on
Celery beat. Whatever base the new vector was made on, it only ever merges the current
base (``app.services.generations.current_base``): merging an older base would make a
version that, once promoted and started as a generation, forks the lineage, and the
vectors pushed against the newer base could then never be merged. Vectors of older bases
of its lineage reach the current base through the merge's selection, weighted or left out
as ``MEDVEC_STALE_POLICY`` and ``MEDVEC_STALENESS_POWER`` say; they do not count toward K
(the asynchronous simulation measured that counting them hurts), but the schedule
(``MEDVEC_AUTO_MERGE_EVERY_S``) merges them when only they arrived. An admin can still merge
an older base by hand (``POST /merges``). With screening on, vectors not screened yet are
left for the next merge (the merge would otherwise take a vector screening may
quarantine), and the base waits while fewer than K of its vectors are screened. Asking
twice is harmless: a merge request with the same inputs finds its job.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import datetime

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from app.db import utcnow
from app.models import BaseModelRecord, DataVector, MergeJob, VectorStatus
from app.security import Actor
from app.services.errors import DomainError
from app.services.generations import current_base, lineage
from app.services.hospitals import of_present_hospital
from app.services.merges import MergeRequest, request_merge
from app.services.selection import vectors_in_base
from medvec.merging.policy import StalePolicy, merge_due
from worker.config import WorkerSettings

log = logging.getLogger(__name__)

ACTOR = Actor.system("auto-merge")


@dataclass(frozen=True)
class BaseActivity:
    base_id: str
    last_merge_at: datetime | None
    new_vectors: int
    stale_vectors: int = 0  # of older bases, the merge would take them; not toward K


def activity(session: Session, base: BaseModelRecord, *, stale: bool = False) -> BaseActivity:
    """How many validated vectors arrived for ``base`` since its last merge request; with
    ``stale`` (the stale policy weights them and a schedule can merge them) also how many
    of its lineage's older bases arrived since then that no version of the lineage took."""
    last = session.scalar(select(func.max(MergeJob.created_at)).where(MergeJob.base_id == base.id))
    since = [] if last is None else [DataVector.created_at > last]
    state = BaseActivity(base.id, last, _validated(session, [base.id], *since))
    older = lineage(session, base)[1:] if stale else []
    if not older:
        return state
    taken = vectors_in_base(session, [base, *older])
    fresh = _validated(session, [b.id for b in older], *since, DataVector.id.not_in(taken))
    return replace(state, stale_vectors=fresh)


def _validated(session: Session, base_ids: list[str], *where: ColumnElement[bool]) -> int:
    """Validated vectors of present hospitals for ``base_ids`` that also meet ``where``."""
    query = select(func.count(DataVector.id)).where(
        DataVector.base_id.in_(base_ids),
        DataVector.status == VectorStatus.VALIDATED,
        of_present_hospital(),
        *where,
    )
    return int(session.scalar(query) or 0)


def unscreened(session: Session, base_id: str) -> int:
    """Validated vectors of ``base_id`` that screening has not looked at yet."""
    return _validated(session, [base_id], DataVector.screened_at.is_(None))


def screened(session: Session, base_id: str) -> int:
    """Validated vectors of ``base_id`` that screening has passed."""
    return _validated(session, [base_id], DataVector.screened_at.is_not(None))


def is_due(state: BaseActivity, settings: WorkerSettings, now: datetime) -> bool:
    """``medvec.merging.policy.merge_due`` with the worker's K and schedule."""
    last = state.last_merge_at
    return merge_due(
        state.new_vectors,
        None if last is None else (now - last).total_seconds(),
        k=settings.auto_merge_k,
        every_s=settings.auto_merge_every_s,
        stale_vectors=state.stale_vectors,
    )


def check_policy(
    session: Session,
    settings: WorkerSettings,
    *,
    base_id: str | None = None,
    now: datetime | None = None,
) -> list[str]:
    """Request the merge of the current base if it is due; the new job's id, if any.

    ``base_id``: the base of the vector that triggered the check (none on beat), for the
    log only; a vector against an older base asks about the current base too. The caller
    commits and then sends the deferred tasks.
    """
    if not settings.auto_merge:
        return []
    now = now or utcnow()
    try:
        base = current_base(session)
    except DomainError as exc:
        log.info("auto-merge: nothing to merge: %s", exc.message)
        return []
    if base_id is not None and base_id != base.id:
        log.info("auto-merge: a vector of base %s; checking the current base %s", base_id, base.id)
    # stale arrivals only ever make a merge due on the schedule (they do not count toward K)
    scheduled_stale = (
        settings.stale_policy is StalePolicy.WEIGHT and settings.auto_merge_every_s is not None
    )
    state = activity(session, base, stale=scheduled_stale)
    if not is_due(state, settings, now):
        return []
    screened_only = settings.screening_enabled and unscreened(session, base.id) > 0
    if screened_only and screened(session, base.id) < settings.auto_merge_k:
        # merge what screening has passed; the vectors still being screened wait for
        # the next merge (waiting for all of them starves the policy while hospitals
        # keep pushing, as the demo's hospitals do)
        log.info("auto-merge of base %s waits for screening", base.id)
        return []
    request = MergeRequest(
        base_id=base.id,
        strategy=settings.auto_merge_strategy,
        params=settings.auto_merge_params,
        rebase=settings.stale_policy is StalePolicy.WEIGHT,
        staleness_power=settings.staleness_power,
        screened_only=screened_only,
    )
    try:
        job, queued = request_merge(session, request, actor=ACTOR)
    except DomainError as exc:
        log.warning("auto-merge of base %s skipped: %s", base.id, exc.message)
        return []
    if not queued:
        return []
    log.info("auto-merge: job %s for base %s (%d new)", job.id, base.id, state.new_vectors)
    return [job.id]
