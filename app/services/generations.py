"""Generations: which base is current, each base's lineage, and how stale a vector is.

Promoting a version as a new base starts a generation. A vector made against an older
base of the same architecture is ``staleness`` generations old for a newer one; merges
apply it to the newer base with a down-weighted share (``MergeSpec.rebase``; the
default of the API and the auto-merge), or exclude it. Selection, the merge worker and
running sums all ask here.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import BaseModelRecord, BaseStatus, ModelVersion
from app.security import Actor
from app.services import audit
from app.services.errors import Conflict, NotFound

__all__ = ["current_base", "lineage", "staleness", "start_generation"]


def current_base(session: Session) -> BaseModelRecord:
    """The ready base of the newest generation: the one hospitals pull and train on."""
    query = (
        select(BaseModelRecord)
        .where(BaseModelRecord.status == BaseStatus.READY)
        .order_by(
            BaseModelRecord.generation.desc(),
            BaseModelRecord.created_at.desc(),
            BaseModelRecord.id,
        )
    )
    base = session.scalars(query.limit(1)).first()
    if base is None:
        raise NotFound(
            "no base model is ready yet",
            hint="an admin registers one with POST /api/v1/bases; a worker then verifies it",
        )
    return base


def lineage(session: Session, base: BaseModelRecord) -> list[BaseModelRecord]:
    """``base`` and its ancestors (newest first) that share its architecture and shapes:
    the bases whose vectors may be applied to ``base``."""
    chain = [base]
    node = base
    while node.parent_id is not None:
        parent = session.get(BaseModelRecord, node.parent_id)
        if parent is None or parent.spec != base.spec:
            break
        chain.append(parent)
        node = parent
    return chain


def staleness(session: Session, base: BaseModelRecord, vector_base_id: str) -> int | None:
    """How many generations the base ``vector_base_id`` lies behind ``base`` along
    ``base``'s lineage (0: the same base, 1: its parent, ...); ``None`` when it is not in
    that lineage (its vectors cannot be applied).

    Counted along the lineage, not as the difference of generation numbers:
    ``start_generation`` numbers generations globally, so a generation started from an
    older base while newer ones exist is several numbers above its direct parent."""
    for steps, ancestor in enumerate(lineage(session, base)):
        if ancestor.id == vector_base_id:
            return steps
    return None


def start_generation(session: Session, actor: Actor, version: ModelVersion) -> BaseModelRecord:
    """Make ``version`` the base of a new generation; the old base stays readable."""
    taken = session.scalar(
        select(BaseModelRecord).where(
            (BaseModelRecord.source_version_id == version.id)
            | (BaseModelRecord.sha256 == version.sha256)
        )
    )
    if taken is not None:
        raise Conflict(
            f"version {version.id} is already base {taken.id}",
            hint="pull that base",
            base_id=taken.id,
        )
    parent = session.get(BaseModelRecord, version.base_id)
    assert parent is not None
    top = (
        session.scalar(
            select(BaseModelRecord.generation).order_by(BaseModelRecord.generation.desc()).limit(1)
        )
        or 0
    )
    generation = max(parent.generation, top) + 1
    base = BaseModelRecord(
        name=f"{parent.name}-g{generation}",
        arch=parent.arch,
        spec=parent.spec,
        provenance={
            "source_version_id": version.id,
            "strategy": version.strategy,
            "parent_base_id": parent.id,
        },
        sha256=version.sha256,
        size=version.size,
        generation=generation,
        parent_id=parent.id,
        source_version_id=version.id,
    )
    session.add(base)
    session.flush()
    audit.record(
        session,
        actor,
        "base.generation_started",
        target_type="base",
        target_id=base.id,
        version_id=version.id,
        generation=generation,
    )
    return base
