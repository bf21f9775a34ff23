"""The auto-promotion policy: a version whose evaluation passes the promotion gate
replaces production without an admin asking.

Off unless ``MEDVEC_AUTO_PROMOTE=true``. Runs after every completed evaluation; only a
candidate or staging version is considered, and only when the gate can compare it on
the validation split (on ``test`` only for a benchmark without one); a refusal or a
missing comparison leaves everything as it is. The promotion is audited
as the system actor ``system:auto-promote``, with the gate's checks.

The promoted version also becomes the base of a new generation (``MEDVEC_AUTO_GENERATION``,
on by default), in the same transaction: hospitals pull production and push vectors
against it, and a vector is only accepted against a base, so without it the registry
would wait for an admin after every promotion and asynchronous hospitals would train
on a production they cannot push against.
"""

from __future__ import annotations

import logging

from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings
from app.models import Benchmark, ModelVersion, VersionStatus
from app.security import Actor
from app.services.errors import Conflict
from app.services.gates import GateOutcome, evaluate_gate, policy_of
from app.services.generations import start_generation
from app.services.versions import production_version, promote
from worker.session import session_scope

log = logging.getLogger(__name__)

ACTOR = Actor.system("auto-promote")
PROMOTABLE = (VersionStatus.CANDIDATE, VersionStatus.STAGING)


def _val_pending(session: Session, outcome: GateOutcome) -> bool:
    """Whether the gate compared on ``test`` while the benchmark has a ``val`` split: the
    validation evaluation is still to come, and choices are made on validation."""
    benchmark = session.get(Benchmark, outcome.benchmark_id)
    return outcome.split != "val" and benchmark is not None and bool(benchmark.sizes.get("val"))


def _start_generation(session: Session, version: ModelVersion) -> None:
    """Make ``version`` a base; a version whose weights already are a base (a merge that
    changed nothing) stays production without a generation of its own."""
    try:
        start_generation(session, ACTOR, version)
    except Conflict as exc:
        log.info("auto-promoted version %s starts no generation: %s", version.id, exc)


def auto_promote(sessions: sessionmaker[Session], version_id: str, settings: Settings) -> bool:
    """Promote ``version_id`` to production if the policy is on and the gate passes."""
    if not settings.auto_promote:
        return False
    with session_scope(sessions) as session:
        version = session.get(ModelVersion, version_id)
        if version is None or version.status not in PROMOTABLE:
            return False
        policy = policy_of(settings)
        outcome = evaluate_gate(session, version, production_version(session), policy)
        if outcome is None or not outcome.passed or _val_pending(session, outcome):
            log.info("auto-promotion of %s: gate not passed on validation", version_id)
            return False
        promote(
            session, ACTOR, version_id, stage=VersionStatus.PRODUCTION, force=False, gate=policy
        )
        if settings.auto_generation:
            _start_generation(session, version)
    log.info("auto-promoted version %s to production", version_id)
    return True
