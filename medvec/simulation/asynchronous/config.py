"""Settings of one asynchronous simulation: data, local training, compute budget, clock,
the registry's policy (one or more variants) and the baselines."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from medvec.gates import GatePolicy
from medvec.simulation.asynchronous.clock import ClockConfig
from medvec.simulation.run import SimulationConfig
from medvec.training_config import Recipe

__all__ = ["BASELINES", "AsyncConfig", "BaselineConfig", "PolicyConfig", "StaleRule"]

StaleRule = Literal["exclude", "weight"]

BASELINES = ("sync", "sync_deadline", "fedasync", "fedbuff")
"""Synchronous FedAvg (every round waits for its slowest hospital), synchronous with a
deadline (late vectors dropped), FedAsync (Xie et al., 2019) and FedBuff (Nguyen et
al., AISTATS 2022)."""


class PolicyConfig(BaseModel):
    """The registry's auto-merge and promotion policy, as the simulation runs it.

    The defaults are the registry's (``WorkerSettings``: ``auto_merge_k``,
    ``auto_merge_every_s``, ``stale_policy``, ``staleness_power``; a test keeps them
    equal), except that promotion follows every merge the gate passes (the registry's
    ``MEDVEC_AUTO_PROMOTE``). Every merged version starts the next generation, which
    hospitals pull, as ``MEDVEC_AUTO_GENERATION=merged`` does.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    k: int = Field(default=3, ge=1, description="merge after this many new vectors")
    every_s: float | None = Field(
        default=None, gt=0, description="also merge whatever is new after this many seconds"
    )
    stale: StaleRule = Field(
        default="weight",
        description="a hospital whose newest vector is of an older generation: leave it out "
        "or apply it to the current base weighted by (1 + staleness) ** -staleness_power",
    )
    staleness_power: float = Field(default=0.5, ge=0)
    skip_merged: bool = Field(
        default=False,
        description="leave out a stale vector already merged into the current base (the "
        "registry applies it again)",
    )
    count_stale: bool = Field(
        default=False,
        description="stale vectors count toward k, as the merge takes them (stale = weight); "
        "the registry counts only vectors of the current base",
    )
    server_lr: float = Field(
        default=1.0, gt=0, description="step along the weighted mean of the vectors"
    )
    gate: GatePolicy | None = Field(
        default=GatePolicy(),
        description="promote a merge only when it passes this promotion gate against "
        "production on validation (the registry's defaults); None: promote every merge",
    )
    generations: Literal["promoted", "merged"] = Field(
        default="merged",
        description="what starts the next generation, the base hospitals pull (the "
        "registry's MEDVEC_AUTO_GENERATION): every merged version, while the gate still "
        "decides what is promoted to production (FedBuff's moving model), or only a "
        "promoted version",
    )

    @model_validator(mode="after")
    def _stale_counted_only_when_taken(self) -> PolicyConfig:
        if self.count_stale and self.stale != "weight":
            raise ValueError("count_stale needs stale = 'weight': excluded vectors are not merged")
        return self


class BaselineConfig(BaseModel):
    """The baselines' own parameters."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    deadline_factor: float = Field(
        default=2.0, gt=0, description="deadline: this many times the median hospital's job"
    )
    fedasync_alpha: float = Field(default=0.6, gt=0, le=1, description="mixing weight")
    fedasync_power: float = Field(default=0.5, ge=0, description="(1 + staleness) ** -power")
    fedbuff_k: int = Field(default=3, ge=1, description="updates buffered per server step")
    fedbuff_lr: float = Field(default=1.0, gt=0, description="server learning rate")
    fedbuff_power: float = Field(default=0.5, ge=0, description="(1 + staleness) ** -power")


class AsyncConfig(BaseModel):
    """One asynchronous simulation: every strategy on the same data, base, clock and budget.

    Each hospital's job is ``local_steps`` optimiser steps of ``batch_size`` images with
    ``medvec simulate``'s recipe; every strategy runs until the hospitals trained
    ``compute_rounds x hospitals x local images`` images in all.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    dataset: str = "bloodmnist"
    hospitals: int = Field(default=10, ge=1)
    partition: str = Field(default="dirichlet", pattern="^(iid|dirichlet)$")
    alpha: float = Field(default=0.5, gt=0)
    max_train: int | None = Field(default=2500, ge=1)
    max_val: int | None = Field(default=500, ge=1)
    max_test: int | None = Field(default=None, ge=1)
    local_steps: int = Field(default=8, ge=1)
    batch_size: int = Field(default=32, ge=1)
    recipe: Recipe = "sgd"
    lr: float | None = Field(default=None, gt=0)
    compute_rounds: float = Field(default=24.0, gt=0)
    calibrate: bool = True
    curve_points: int = Field(
        default=50, ge=1, description="production is scored at most this often per run"
    )
    seed: int = 0
    eval_batch_size: int = Field(default=256, ge=1)
    clock: ClockConfig = ClockConfig()
    policies: dict[str, PolicyConfig] = Field(default_factory=lambda: {"medvec": PolicyConfig()})
    baselines: tuple[str, ...] = BASELINES
    baseline: BaselineConfig = BaselineConfig()

    @property
    def local_images(self) -> int:
        return self.local_steps * self.batch_size

    @property
    def compute(self) -> float:
        """Images all hospitals train in one run of a strategy."""
        return self.compute_rounds * self.hospitals * self.local_images

    def point(self) -> SimulationConfig:
        """The data and training settings as the runner reads them (one job's budget)."""
        return SimulationConfig(
            dataset=self.dataset,
            hospitals=self.hospitals,
            partition=self.partition,
            alpha=self.alpha,
            max_train=self.max_train,
            max_val=self.max_val,
            max_test=self.max_test,
            generations=1,
            steps=self.local_steps,
            recipe=self.recipe,
            lr=self.lr,
            batch_size=self.batch_size,
            strategies=("weighted_mean",),
            calibrate=self.calibrate,
            centralized=False,
            seed=self.seed,
            eval_batch_size=self.eval_batch_size,
        )
