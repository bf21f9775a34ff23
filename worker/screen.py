"""Screen an accepted vector before anything merges it, and quarantine it if it is an outlier.

Runs as the first step of the registry's ``medvec.vectors.accepted`` job (and again from
the sweeper for a vector whose job was lost). The statistics (``medvec.screening``)
compare the vector with the other hospitals' current vectors of its base and measure
``base + vector`` on the validation split of the base's validation benchmark. A vector
the policy (``MEDVEC_SCREENING_*``) finds an outlier moves to ``quarantined`` with the
reason; an admin releases or rejects it (``app.services.quarantine``).

Idempotent: a vector already screened, or no longer ``validated``, is left as it is.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from torch.utils.data import Subset

from app.config import Settings
from app.db import utcnow
from app.models import BaseModelRecord, DataVector, VectorStatus
from app.security import Actor
from app.services import audit
from app.services.calibration import VALIDATION_SPLIT, validation_benchmark
from app.services.hospitals import of_present_hospital
from app.storage import BlobStore
from medvec.models import read_model_spec
from medvec.screening import (
    ScreeningPolicy,
    ScreeningStats,
    cosine_to_mean,
    layer_norms,
    measure_vector,
    median_accuracy,
    median_norm,
    outlier_reasons,
)
from worker.errors import JobGone
from worker.evaluate import Evaluator, SplitRef
from worker.session import session_scope

log = logging.getLogger(__name__)

ACTOR = Actor.system("screening")


def policy_of(settings: Settings) -> ScreeningPolicy:
    return ScreeningPolicy(
        norm_k=settings.screening_norm_k,
        min_cosine=settings.screening_min_cosine,
        accuracy_margin=settings.screening_accuracy_margin,
        min_peers=settings.screening_min_peers,
    )


@dataclass(frozen=True)
class _Work:
    """What one screening reads, detached from the session."""

    vector_path: Path
    norm: float
    base_path: Path
    peer_paths: list[Path]
    peer_norms: list[float]
    peer_accuracies: list[float]
    validation: SplitRef | None


def current_peers(session: Session, vector: DataVector) -> list[DataVector]:
    """The other hospitals' current vectors of ``vector``'s base (quarantined ones and
    removed hospitals' left out)."""
    query = select(DataVector).where(
        DataVector.base_id == vector.base_id,
        DataVector.status == VectorStatus.VALIDATED,
        DataVector.hospital_id != vector.hospital_id,
        of_present_hospital(),
    )
    return list(session.scalars(query.order_by(DataVector.created_at, DataVector.id)))


def _val_accuracy(vector: DataVector) -> float | None:
    """The validation accuracy screening measured for ``vector`` (``None``: not yet)."""
    val = (vector.screening or {}).get("val") or {}
    accuracy = val.get("accuracy")
    return float(accuracy) if accuracy is not None else None


def _plan(session: Session, store: BlobStore, vector: DataVector) -> _Work:
    base = session.get(BaseModelRecord, vector.base_id)
    if base is None:
        raise JobGone(f"base {vector.base_id} of vector {vector.id} does not exist")
    peers = current_peers(session, vector)
    benchmark = validation_benchmark(session, base, None)
    return _Work(
        vector_path=store.local_path(vector.sha256),
        norm=float(vector.norm or 0.0),
        base_path=store.local_path(base.sha256),
        peer_paths=[store.local_path(p.sha256) for p in peers],
        peer_norms=[float(p.norm) for p in peers if p.norm is not None],
        peer_accuracies=[a for a in map(_val_accuracy, peers) if a is not None],
        validation=SplitRef.of(benchmark, VALIDATION_SPLIT) if benchmark else None,
    )


def measure(
    work: _Work, store: BlobStore, settings: Settings, evaluator: Evaluator
) -> ScreeningStats:
    """Every screening statistic of the planned vector; the validation images come from
    the process's ``evaluator`` (decoded once, not once per pushed vector)."""
    val = base_val = None
    if work.validation is not None:
        spec = read_model_spec(work.base_path)
        images = evaluator.split(store, work.validation, VALIDATION_SPLIT, spec)
        head = Subset(images, range(min(len(images), settings.screening_max_images)))
        val, base_val = measure_vector(work.base_path, work.vector_path, head)
    return ScreeningStats(
        norm=work.norm,
        layer_norms=layer_norms(work.vector_path),
        peers=len(work.peer_paths),
        median_peer_norm=median_norm(work.peer_norms),
        cosine_to_peers=cosine_to_mean(work.vector_path, work.peer_paths),
        median_peer_accuracy=median_accuracy(work.peer_accuracies),
        peers_measured=len(work.peer_accuracies),
        val=val,
        base_val=base_val,
    )


def screen_vector(
    sessions: sessionmaker[Session],
    store: BlobStore,
    vector_id: str,
    settings: Settings,
    evaluator: Evaluator,
) -> dict[str, Any] | None:
    """Screen vector ``vector_id`` (if screening is on and it was not yet); its screening."""
    if not settings.screening_enabled:
        return None
    with session_scope(sessions) as session:
        vector = session.get(DataVector, vector_id)
        if vector is None:
            raise JobGone(f"vector {vector_id} does not exist")
        if vector.screened_at is not None or vector.status is not VectorStatus.VALIDATED:
            return vector.screening
        work = _plan(session, store, vector)
    stats = measure(work, store, settings, evaluator)
    reasons = outlier_reasons(stats, policy_of(settings))
    with session_scope(sessions) as session:
        return _record(session, vector_id, stats, reasons, work.validation)


def _record(
    session: Session,
    vector_id: str,
    stats: ScreeningStats,
    reasons: list[str],
    validation: SplitRef | None,
) -> dict[str, Any] | None:
    vector = session.get(DataVector, vector_id, with_for_update=True)
    if vector is None or vector.screened_at is not None:
        return None if vector is None else vector.screening
    screening = {
        **stats.model_dump(mode="json"),
        "validation_benchmark_id": validation.benchmark_id if validation else None,
        "reasons": reasons,
    }
    vector.screening, vector.screened_at = screening, utcnow()
    quarantine = bool(reasons) and vector.status is VectorStatus.VALIDATED
    if quarantine:
        vector.status = VectorStatus.QUARANTINED
        vector.reason = "; ".join(reasons)
    audit.record(
        session,
        ACTOR,
        "vector.quarantined" if quarantine else "vector.screened",
        target_type="vector",
        target_id=vector.id,
        reasons=reasons,
        norm=stats.norm,
        cosine=stats.cosine_to_peers,
        val_accuracy=stats.val.accuracy if stats.val else None,
    )
    log.info("vector %s screened: %s", vector.id, "; ".join(reasons) or "clean")
    return screening


def mark_screening_failed(sessions: sessionmaker[Session], vector_id: str, reason: str) -> None:
    """Record that screening could not run: the vector stays ``validated`` (a broken check
    must not hold every vector back) and the admin sees why in its screening."""
    with session_scope(sessions) as session:
        vector = session.get(DataVector, vector_id)
        if vector is None or vector.screened_at is not None:
            return
        vector.screening = {"error": reason[:4000], "reasons": []}
        vector.screened_at = utcnow()
        audit.record(
            session, ACTOR, "vector.screening_failed", target_type="vector",
            target_id=vector.id, error=reason[:500],
        )  # fmt: skip
