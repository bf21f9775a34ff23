"""Quarantined vectors: the admin's list, and release (back to ``validated``) or rejection.

Screening (``worker.screen``) puts an outlier in ``quarantined``; no default or automatic
merge takes it. Releasing it makes it a current vector again and asks the auto-merge
policy whether a merge is now due; rejecting it is final and tells the hospital why.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.jobs import defer_job
from app.models import DataVector, VectorStatus
from app.security import Actor
from app.services import audit
from app.services.errors import Conflict, NotFound
from app.tasks import VectorAccepted


def list_quarantined(session: Session, base_id: str | None = None) -> list[DataVector]:
    """Every quarantined vector (of ``base_id``), oldest first."""
    query = select(DataVector).where(DataVector.status == VectorStatus.QUARANTINED)
    if base_id:
        query = query.where(DataVector.base_id == base_id)
    return list(session.scalars(query.order_by(DataVector.created_at, DataVector.id)))


def _quarantined(session: Session, vector_id: str) -> DataVector:
    vector = session.get(DataVector, vector_id, with_for_update=True)
    if vector is None:
        raise NotFound(f"no vector {vector_id}", hint="list them with GET /api/v1/quarantine")
    if vector.status is not VectorStatus.QUARANTINED:
        raise Conflict(
            f"vector {vector.id} is {vector.status.value}, not quarantined",
            hint="only quarantined vectors can be released or rejected",
            status=vector.status.value,
        )
    return vector


def release(session: Session, actor: Actor, vector_id: str, note: str | None) -> DataVector:
    """Put a quarantined vector back among the current ones; merges may take it again."""
    vector = _quarantined(session, vector_id)
    held_for = vector.reason
    vector.status, vector.reason = VectorStatus.VALIDATED, None
    session.flush()
    audit.record(
        session,
        actor,
        "vector.released",
        target_type="vector",
        target_id=vector.id,
        quarantined_for=held_for,
        note=note,
    )
    # screening is done, so the job only runs the auto-merge policy for the base
    defer_job(session, VectorAccepted(vector_id=vector.id))
    return vector


def reject(session: Session, actor: Actor, vector_id: str, reason: str) -> DataVector:
    """Reject a quarantined vector for good; ``reason`` is what its hospital reads."""
    vector = _quarantined(session, vector_id)
    held_for = vector.reason
    vector.status, vector.reason = VectorStatus.REJECTED, f"rejected by an admin: {reason}"
    session.flush()
    audit.record(
        session,
        actor,
        "vector.rejected",
        target_type="vector",
        target_id=vector.id,
        quarantined_for=held_for,
        reason=reason,
    )
    return vector
