"""Which versions start a generation without an admin (``MEDVEC_AUTO_GENERATION``).

A generation's base is what hospitals pull, train on and push vectors against.

* ``merged`` (the default): every version the auto-merge policy makes of the current base
  starts the next generation as its merge is recorded, so hospitals train from the newest
  merge while production follows the promotion gate, as FedBuff's clients train from its
  moving model. On a virtual clock this ended 4.2 points higher on validation where the
  gate refused most candidates, and the same elsewhere (docs/merging.md, "What hospitals
  train from when the gate refuses").
* ``promoted``: a version auto-promotion promotes starts it, in the promotion's transaction.
* ``off``: an admin starts generations (``POST /versions/{id}/generation``).

Either way a version starts a generation only when it was made from the current base.
One made from an older base (a merge that finished after the base had moved on) would
fork the lineage: the vectors hospitals pushed against the newer base would no longer be
in it, and could never be merged again.
"""

from __future__ import annotations

import logging

from sqlalchemy.orm import Session

from app.config import AutoGeneration, Settings
from app.models import BaseModelRecord, MergeJob, ModelVersion
from app.security import Actor
from app.services.errors import Conflict
from app.services.generations import current_base, start_generation
from worker.policy import ACTOR as AUTO_MERGE

log = logging.getLogger(__name__)

ACTOR = Actor.system("auto-generation")

__all__ = ["ACTOR", "after_merge", "start_from"]


def start_from(session: Session, actor: Actor, version: ModelVersion) -> BaseModelRecord | None:
    """Make ``version`` the next generation's base when it was made from the current base;
    the new base, or ``None`` (logged) when it was not, or its weights already are a base
    (a merge that changed nothing)."""
    # the lock orders two merges of one base finishing at once: the second sees the first's
    # generation and starts none (PostgreSQL; SQLite's writers are serialised already)
    session.get(BaseModelRecord, version.base_id, with_for_update=True)
    current = current_base(session)
    if version.base_id != current.id:
        log.info(
            "version %s starts no generation: made from base %s, the current base is %s",
            version.id,
            version.base_id,
            current.id,
        )
        return None
    try:
        return start_generation(session, actor, version)
    except Conflict as exc:
        log.info("version %s starts no generation: %s", version.id, exc.message)
        return None


def after_merge(
    session: Session, job: MergeJob, version: ModelVersion, settings: Settings
) -> BaseModelRecord | None:
    """With ``MEDVEC_AUTO_GENERATION=merged``, the version the auto-merge policy's ``job``
    just made starts the next generation (in the transaction that records it); a merge an
    admin asked for does not."""
    if settings.auto_generation is not AutoGeneration.MERGED or job.requested_by != AUTO_MERGE.name:
        return None
    return start_from(session, ACTOR, version)
