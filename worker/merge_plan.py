"""What a merge job merges, read from its row: the plan the merge task computes from."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import BaseModelRecord, Benchmark, DataVector, MergeJob
from app.services import generations, running_sums
from app.services.calibration import VALIDATION_SPLIT, validation_benchmark
from app.storage import BlobStore
from medvec.merging.spec import MergeSpec
from worker.errors import JobGone, TerminalJobError
from worker.splits import SplitRef

__all__ = ["MergePlan", "plan_of"]


@dataclass(frozen=True)
class MergePlan:
    job_id: str
    base_id: str
    base_path: Path
    spec: MergeSpec
    vector_ids: list[str]
    vector_paths: list[Path]
    weights: list[float]
    provenance: dict[str, Any]
    base_sha256: str = ""
    rebase: bool = False
    """Some inputs are of an older generation: the engine applies them to this base."""
    calibration: SplitRef | None = None
    validation: SplitRef | None = None
    sums_weighting: str | None = None
    """The running sums (of this weighting) hold exactly the inputs: build from them."""

    @property
    def strategy(self) -> str:
        return self.spec.strategy


def plan_of(session: Session, store: BlobStore, job: MergeJob) -> MergePlan:
    """What a claimed job merges: its base, its inputs' files and weights, how stale each
    is, whether the running sums hold them, and where it recalibrates and is measured."""
    base = session.get(BaseModelRecord, job.base_id)
    if base is None:
        raise JobGone(f"base {job.base_id} of merge job {job.id} does not exist")
    inputs = job.selection.get("inputs", [])
    ids = [i["vector_id"] for i in inputs]
    vectors = {v.id: v for v in session.scalars(select(DataVector).where(DataVector.id.in_(ids)))}
    missing = [i for i in ids if i not in vectors]
    if missing:
        raise JobGone(f"vectors {missing} of merge job {job.id} no longer exist")
    stale = [generations.staleness(session, base, vectors[i].base_id) for i in ids]
    foreign = [i for i, s in zip(ids, stale, strict=True) if s is None]
    if foreign:
        raise TerminalJobError(
            f"vectors {foreign} of merge job {job.id} are not of base {base.id}'s lineage"
        )
    spec = job.spec
    weights = [float(i["weight"]) for i in inputs]
    sums = None
    if spec.is_linear and not any(stale) and spec.weighting in running_sums.WEIGHTINGS:
        held = running_sums.matching(
            session, base.id, str(spec.weighting), dict(zip(ids, weights, strict=True))
        )
        sums = held.weighting if held is not None else None
    validation = validation_benchmark(session, base, job.benchmark_id)
    return MergePlan(
        job_id=job.id,
        base_id=base.id,
        base_path=store.local_path(base.sha256),
        spec=spec,
        vector_ids=ids,
        vector_paths=[store.local_path(vectors[i].sha256) for i in ids],
        weights=weights,
        base_sha256=base.sha256,
        rebase=any(stale),
        sums_weighting=sums,
        calibration=_calibration_images(session, job),
        validation=SplitRef.of(validation, VALIDATION_SPLIT) if validation else None,
        provenance={
            "merge_job_id": job.id,
            "base_id": base.id,
            "base_sha256": base.sha256,
            "generation": base.generation,
            "strategy": job.strategy,
            "params": dict(spec.params),
            "seed": spec.seed,
            "inputs": [{"vector_id": i["vector_id"], "weight": i["weight"]} for i in inputs],
        },
    )


def _calibration_images(session: Session, job: MergeJob) -> SplitRef | None:
    """The split the job recalibrates on (chosen at request time), or ``None``."""
    source = job.calibration
    if source is None:
        return None
    benchmark = session.get(Benchmark, source["benchmark_id"])
    if benchmark is None:
        raise TerminalJobError(
            f"calibration benchmark {source['benchmark_id']} of merge job {job.id} no longer "
            "exists: request the merge again"
        )
    return SplitRef.of(benchmark, str(source["split"]))
