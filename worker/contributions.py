"""Compute each input hospital's contribution to a linear version, on a validation split.

The version's own inputs and weights (its lineage) are summed once
(``medvec.merging.sums.build_sums``); each leave-one-out model is then the sums minus one
share (one vector read), recalibrated on the version's calibration images like the
version itself, and evaluated on the validation split of the version's validation
benchmark, both by the worker process's ``Evaluator``. The result
(``ModelVersion.contributions``) is
``{"benchmark_id", "split", "all": metrics, "hospitals": [{vector_id, hospital_id,
accuracy, auc_macro, sensitivity, without: {accuracy, auc_macro, sensitivity}}]}``.
Running it again recomputes the same numbers.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.models import (
    BaseModelRecord,
    Benchmark,
    DataVector,
    MergeJob,
    ModelVersion,
    VersionInput,
)
from app.services.calibration import VALIDATION_SPLIT, validation_benchmark
from app.services.secure_shares import is_secure_version
from app.storage import BlobStore
from medvec.merging import get_strategy
from medvec.merging.contributions import Contribution, leave_one_out
from medvec.merging.sums import Share, build_sums
from medvec.metrics import Metrics
from medvec.models import load_model_file, read_model_spec
from worker.calibrate import recalibrate_on
from worker.config import WorkerSettings
from worker.errors import JobGone, TerminalJobError
from worker.evaluate import Evaluator, SplitRef
from worker.session import session_scope

log = logging.getLogger(__name__)


def _inputs(session: Session, version: ModelVersion) -> list[tuple[DataVector, float]]:
    rows = session.execute(
        select(DataVector, VersionInput.weight)
        .join(VersionInput, VersionInput.vector_id == DataVector.id)
        .where(VersionInput.version_id == version.id)
        .order_by(DataVector.created_at, DataVector.id)
    ).all()
    return [(vector, float(weight)) for vector, weight in rows]


def _brief(metrics: Metrics) -> dict[str, Any]:
    return {
        "accuracy": metrics.accuracy,
        "auc_macro": metrics.auc_macro,
        "sensitivity": metrics.sensitivity,
    }


@dataclass(frozen=True)
class _Plan:
    """What leave-one-out reads of a version, taken in one transaction."""

    validation: SplitRef
    calibration: SplitRef | None
    hospital_of: dict[str, str]
    shares: list[Share]
    strategy: str
    params: dict[str, Any]
    base_sha256: str
    base_path: Path


def compute_contributions(
    sessions: sessionmaker[Session],
    store: BlobStore,
    evaluator: Evaluator,
    version_id: str,
    settings: WorkerSettings,
) -> dict[str, Any]:
    """Compute and store the contributions of ``version_id``'s inputs; the stored document."""
    with session_scope(sessions) as session:
        plan = _plan(session, store, version_id)
    everyone, found = _leave_one_out(plan, store, evaluator, settings, version_id)
    document = {
        "benchmark_id": plan.validation.benchmark_id,
        "split": plan.validation.split,
        "recalibrated_on": plan.calibration.benchmark_id if plan.calibration else None,
        "all": _brief(everyone),
        "hospitals": [
            {
                "vector_id": c.member,
                "hospital_id": plan.hospital_of[c.member],
                "accuracy": c.accuracy,
                "auc_macro": c.auc_macro,
                "sensitivity": c.sensitivity,
                "without": _brief(c.without),
            }
            for c in found
        ],
    }
    with session_scope(sessions) as session:
        version = session.get(ModelVersion, version_id, with_for_update=True)
        if version is None:
            raise JobGone(f"version {version_id} does not exist")
        version.contributions = document
    log.info("version %s: contributions of %d hospitals computed", version_id, len(found))
    return document


def _plan(session: Session, store: BlobStore, version_id: str) -> _Plan:
    """The version's inputs, benchmarks and base; a terminal error where leave-one-out
    cannot or must not run (a secure or non-linear merge, no validation split)."""
    version = session.get(ModelVersion, version_id)
    if version is None:
        raise JobGone(f"version {version_id} does not exist")
    base = session.get(BaseModelRecord, version.base_id)
    assert base is not None
    if is_secure_version(version):
        raise TerminalJobError(
            f"version {version_id} is a secure merge: leave-one-out would reveal a vector"
        )
    if not get_strategy(version.strategy).is_linear:
        raise TerminalJobError(
            f"{version.strategy} is not linear: a hospital's share cannot be taken out"
        )
    benchmark = validation_benchmark(session, base, _validated_on(session, version))
    if benchmark is None:
        raise TerminalJobError("no benchmark of the base's task has a validation split")
    calibration = None
    if version.calibration and version.calibration.get("benchmark_id"):
        source = session.get(Benchmark, version.calibration["benchmark_id"])
        if source is not None:
            calibration = SplitRef.of(source, str(version.calibration["split"]))
    inputs = _inputs(session, version)
    return _Plan(
        validation=SplitRef.of(benchmark, VALIDATION_SPLIT),
        calibration=calibration,
        hospital_of={v.id: v.hospital_id for v, _ in inputs},
        shares=[Share(v.id, store.local_path(v.sha256), w) for v, w in inputs],
        strategy=version.strategy,
        params={k: v for k, v in version.params.items() if k == "lambda"},
        base_sha256=base.sha256,
        base_path=store.local_path(base.sha256),
    )


def _leave_one_out(
    plan: _Plan,
    store: BlobStore,
    evaluator: Evaluator,
    settings: WorkerSettings,
    version_id: str,
) -> tuple[Metrics, list[Contribution]]:
    """Every input together, and each left out, scored on validation (recalibrated on the
    version's calibration images first, as the version itself was)."""
    spec = read_model_spec(plan.base_path)
    validation, calibration = plan.validation, plan.calibration
    val = evaluator.split(store, validation, validation.split, spec)
    images = evaluator.split(store, calibration, calibration.split, spec) if calibration else None

    def score(model_file: Path) -> Metrics:
        merged, _ = load_model_file(model_file)
        if calibration is not None and images is not None:
            recalibrate_on(merged, images, calibration, settings.eval_batch_size)
        return evaluator.evaluate(merged, val, spec)

    stamp = f"{version_id}-{time.monotonic_ns()}"
    sums = store.staging_path(f"contrib-sums-{stamp}.safetensors")
    workdir = store.staging_path(f"contrib-{stamp}")
    try:
        build_sums(plan.base_path, plan.shares, sums, base_sha256=plan.base_sha256)
        return leave_one_out(
            plan.base_path,
            sums,
            plan.shares,
            score,
            workdir,
            strategy=plan.strategy,
            params=plan.params,
            base_sha256=plan.base_sha256,
        )
    finally:
        sums.unlink(missing_ok=True)
        if workdir.is_dir():
            workdir.rmdir()


def _validated_on(session: Session, version: ModelVersion) -> str | None:
    """The benchmark the version's merge was tuned or validated on, else the one its
    BatchNorm statistics were recalibrated on: leave-one-out measures a hospital's share
    on the images the merge itself was judged by, not on whichever benchmark of the task
    sorts first by name."""
    job_id = (version.params or {}).get("merge_job_id")
    job = session.get(MergeJob, job_id) if job_id else None
    if job is not None and job.benchmark_id:
        return job.benchmark_id
    calibration = version.calibration or {}
    return calibration.get("benchmark_id")
