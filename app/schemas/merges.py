"""Merge requests and merge jobs: what an admin asks for and what the registry answers."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictFloat

from app.jsontypes import JsonInt
from app.schemas.common import Id, RequestModel, VectorIds
from app.services.calibration import CALIBRATION_AUTO
from medvec.merging.policy import StalePolicy


class Selection(RequestModel):
    """Which vectors go into a merge.

    With no ``vector_ids``: the latest validated vector of every hospital for the base
    (removed hospitals left out) and, with ``stale: weight`` (the default), the newest
    vector of an older generation of the base's lineage from each hospital without one,
    and a hospital's newest vector of an older generation that no version of the lineage
    took, beside its newer one.
    With ``vector_ids``: exactly those, each of which must be validated (or superseded),
    made against this base, by a hospital not removed.
    """

    model_config = ConfigDict(extra="forbid")

    vector_ids: VectorIds | None = None
    stale: StalePolicy = Field(
        default=StalePolicy.WEIGHT,
        description="a hospital whose newest vector is of an older generation: its vector "
        "applied to this base weighted by (1 + staleness) ** -staleness_power (weight), or "
        "left out (exclude); see docs/merging.md",
    )
    staleness_power: StrictFloat = Field(default=0.5, ge=0)


class MergeCreate(RequestModel):
    """A merge request. ``params`` are the strategy's own (``lambda``, ``density``, ``drop_rate``,
    ``trim_fraction``); task arithmetic with ``"lambda": "tune"`` (or a ``lambda_grid``) chooses
    lambda on the benchmark's validation split and needs ``benchmark_id``."""

    model_config = ConfigDict(extra="forbid")

    base_id: Id | None = Field(default=None, description="default: the current base")
    strategy: str = "weighted_mean"
    params: dict[str, Any] = Field(default_factory=dict)
    selection: Selection = Field(default_factory=Selection)
    benchmark_id: Id | None = Field(
        default=None, description="evaluate on it; default: every benchmark of matching classes"
    )
    calibration: str = Field(
        default=CALIBRATION_AUTO,
        min_length=1,
        description=(
            "images on which the merged model's BatchNorm statistics are recomputed: 'auto' "
            "(the val split of benchmark_id, else of the first benchmark of the base's task "
            "that has one; nothing when none has), 'none', or a benchmark id (its val split, "
            "else its train split; never test)"
        ),
    )
    seed: JsonInt = 0


class MergeAccepted(BaseModel):
    job_id: str
    status: str


class MergeRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    job_id: str
    base_id: str
    strategy: str
    params: dict[str, Any]
    selection: dict[str, Any]
    benchmark_id: str | None
    inputs_hash: str
    status: str
    attempts: int
    error: str | None
    version_id: str | None
    requested_by: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    waiting_since: datetime | None = Field(
        description="since when the job has waited for the share holder (down or hung); "
        "`error` says what it answered",
    )
    retry_at: datetime | None = Field(description="when a waiting job asks the share holder again")
