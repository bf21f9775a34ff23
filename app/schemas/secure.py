"""Secure merge requests: a linear merge of hospitals' shares, summed by two servers."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field, StrictFloat

from app.schemas.common import Id, RequestModel, VectorIds
from app.schemas.merges import CALIBRATION_AUTO


class SecureMergeCreate(RequestModel):
    """``weighted_mean`` (``sum_i w_i tau_i / sum_i w_i``, ``w_i`` the public weight each
    hospital pre-scaled its shares by: its sample count, 1 with distributed DP) or
    ``task_arithmetic`` (``lambda * N / sum_i w_i * sum_i w_i tau_i``: task arithmetic
    with the public weights normalised to mean 1, ``lambda * sum_i tau_i`` when they are
    equal) over shares. With no ``vector_ids``: every hospital's current share for the
    base."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    base_id: Id | None = Field(default=None, description="default: the current base")
    strategy: Literal["weighted_mean", "task_arithmetic"] = "weighted_mean"
    lambda_: StrictFloat = Field(default=1.0, alias="lambda", gt=0)
    vector_ids: VectorIds | None = Field(
        default=None,
        description="share ids (status share or share_superseded) of at least K hospitals",
    )
    benchmark_id: Id | None = None
    calibration: str = Field(default=CALIBRATION_AUTO, min_length=1)
