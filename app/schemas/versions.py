"""Model versions, lineage and promotion."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, StrictBool

from app.models.version import VersionStatus
from app.schemas.common import ReadModel, RequestModel


class CalibrationRead(BaseModel):
    """The images a version's BatchNorm statistics were recomputed on after the merge."""

    benchmark_id: str
    split: str
    images: int
    layers: int


class MergeabilityRead(BaseModel):
    """How well a version's inputs merged: the mean pairwise cosine similarity of the input
    vectors (BatchNorm running statistics left out; ``None`` for a single vector) and the
    validation accuracy of the merge as combined (averaged BatchNorm statistics) and after
    recalibration (``None`` when it was not recalibrated), on ``validation_benchmark_id``'s
    ``val`` split (``None`` when no benchmark of the base's task has one).
    ``from_running_sums``: built from the base's running sums, reading no input vector
    (the cosine, which would read them all, is then not measured)."""

    mean_cosine: float | None = None
    from_running_sums: bool = False
    validation_benchmark_id: str | None = None
    val_accuracy_combined: float | None = None
    val_accuracy_recalibrated: float | None = None


class VersionInputRead(ReadModel):
    vector_id: str
    weight: float


class VersionRead(ReadModel):
    id: str
    base_id: str
    name: str | None
    strategy: str
    params: dict[str, Any]
    sha256: str
    size: int
    status: VersionStatus
    production_at: datetime | None
    rolled_back_at: datetime | None
    created_at: datetime
    updated_at: datetime
    inputs: list[VersionInputRead] = []
    calibration: CalibrationRead | None = None
    mergeability: MergeabilityRead | None = None


class PromoteRequest(RequestModel):
    stage: Literal["staging", "production"]
    force: StrictBool = False  # overriding the gate is asked for as JSON true, never 1 or "yes"


class ContributionMetrics(BaseModel):
    accuracy: float
    auc_macro: float | None = None
    sensitivity: list[float | None]


class HospitalContribution(BaseModel):
    """metric(all) - metric(without this hospital's vector); ``without`` holds the latter."""

    vector_id: str
    hospital_id: str
    accuracy: float
    auc_macro: float | None = None
    sensitivity: list[float | None]
    without: ContributionMetrics


class ContributionsRead(BaseModel):
    """Each input hospital's contribution to a linear version, on ``benchmark_id``'s
    ``split`` (validation), every leave-one-out model recalibrated like the version.
    A hospital sees only its own entry."""

    benchmark_id: str
    split: str
    recalibrated_on: str | None = None
    all: ContributionMetrics
    hospitals: list[HospitalContribution]
