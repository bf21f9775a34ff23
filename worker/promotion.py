"""The auto-promotion policy: a version whose evaluation passes the promotion gate
replaces production without an admin asking.

Off unless ``MEDVEC_AUTO_PROMOTE=true``. Runs after every completed evaluation; only a
candidate or staging version is considered, and only when the gate can compare it on
the validation split (on ``test`` only for a benchmark without one); a refusal or a
missing comparison leaves everything as it is. The promotion is audited
as the system actor ``system:auto-promote``, with the gate's checks.

With ``MEDVEC_AUTO_GENERATION=promoted`` the promoted version also becomes the base of a
new generation, in the same transaction (``worker.generations``): a vector is only
accepted against a base, so without it the registry would wait for an admin after every
promotion. With ``merged``, the default, the version already started one when it was
merged, and promotion only moves production.
"""

from __future__ import annotations

import logging

from sqlalchemy.orm import Session, sessionmaker

from app.config import AutoGeneration, Settings
from app.models import Benchmark, ModelVersion, VersionStatus
from app.security import Actor
from app.services.gates import GateOutcome, evaluate_gate, policy_of
from app.services.versions import production_version, promote
from worker.generations import start_from
from worker.session import session_scope

log = logging.getLogger(__name__)

ACTOR = Actor.system("auto-promote")
PROMOTABLE = (VersionStatus.CANDIDATE, VersionStatus.STAGING)


def _val_pending(session: Session, outcome: GateOutcome) -> bool:
    """Whether the gate compared on ``test`` while the benchmark has a ``val`` split: the
    validation evaluation is still to come, and choices are made on validation."""
    benchmark = session.get(Benchmark, outcome.benchmark_id)
    return outcome.split != "val" and benchmark is not None and bool(benchmark.sizes.get("val"))


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
        if settings.auto_generation is AutoGeneration.PROMOTED:
            start_from(session, ACTOR, version)
    log.info("auto-promoted version %s to production", version_id)
    return True
