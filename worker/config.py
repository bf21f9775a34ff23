"""Worker settings: the registry's :class:`~app.config.Settings` plus queue, limits and policy.

Same ``MEDVEC_`` environment variables, same class hierarchy: the API and the
workers read one configuration. Everything here has a default that suits a
single machine; ``MEDVEC_REDIS_URL`` switches from the in-process embedded
worker to Redis and separate worker processes.
"""

from __future__ import annotations

from typing import Any, Self

from pydantic import Field, model_validator

from app.config import Settings
from medvec.merging.policy import StalePolicy


class WorkerSettings(Settings):
    queue: str = Field(default="medvec", description="Celery queue every MedVec task goes to")
    merge_queue: str | None = Field(
        default=None,
        description="Celery queue of merge jobs (medvec.merge.run): a worker serving only it "
        "(celery -A worker.merge_main) never imports torch; recalibration, the version and "
        "evaluations follow on `queue`. Unset: merges run whole on `queue`",
    )
    visibility_timeout_s: int = Field(
        default=7200,
        gt=0,
        description="seconds before Redis redelivers an unacknowledged task; > merge_time_limit_s",
    )
    merge_soft_time_limit_s: int = Field(
        default=3000, gt=0, description="a merge task is asked to stop after this long"
    )
    merge_time_limit_s: int = Field(
        default=3600, gt=0, description="a merge task's process is killed after this long"
    )
    eval_soft_time_limit_s: int = Field(
        default=1800, gt=0, description="an evaluation task is asked to stop after this long"
    )
    eval_time_limit_s: int = Field(
        default=2000, gt=0, description="an evaluation task's process is killed after this long"
    )
    eval_lease_s: float = Field(
        default=2400.0,
        gt=0,
        description="an evaluation still running this long after its worker took it is taken "
        "for dead (the worker was killed) and sent again by the sweeper; > eval_time_limit_s",
    )
    tune_soft_time_limit_s: int = Field(
        default=5000, gt=0, description="a lambda-tuning task is asked to stop after this long"
    )
    tune_time_limit_s: int = Field(
        default=5400, gt=0, description="a lambda-tuning task's process is killed after this long"
    )
    max_attempts: int = Field(
        default=5, ge=1, description="deliveries of one job before it is marked failed"
    )
    max_retries: int = Field(default=3, ge=0, description="retries on transient errors")
    retry_backoff_s: float = Field(
        default=10.0, ge=0, description="first wait before a retry, doubled at each retry"
    )
    share_holder_timeout_s: float = Field(
        default=60.0,
        gt=0,
        description="a secure merge gives up a try when the share holder sends nothing for "
        "this long (hung): the longest a hung share holder holds a worker. Its sums take "
        "about 0.3 s per ResNet-50 member from scratch, and only changed members after that",
    )
    share_holder_connect_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="a secure merge gives up a try when the share holder does not accept "
        "the connection in this long",
    )
    share_holder_retry_s: float = Field(
        default=5.0,
        gt=0,
        description="a secure merge whose share holder is down, hung or failing (5xx) asks "
        "again after this long; each later wait is as long as the job has waited so far",
    )
    share_holder_retry_max_s: float = Field(
        default=300.0,
        gt=0,
        description="the longest wait between two tries of a secure merge for its share holder",
    )
    merge_tensor_delay_s: float = Field(
        default=0.0,
        ge=0,
        description="test-only: sleep after each merged tensor so a merge can be interrupted",
    )
    eval_batch_size: int = Field(
        default=256, gt=0, description="batch size of BatchNorm recalibration"
    )
    eval_device: str = Field(
        default="auto", description="where evaluations run: auto (CUDA when present), cpu, cuda"
    )
    eval_max_batch_size: int = Field(
        default=1024, gt=0, description="evaluation batch sizes are measured up to this one"
    )
    eval_cached_splits: int = Field(
        default=4, ge=0, description="decoded benchmark splits a worker process keeps in memory"
    )

    stale_policy: StalePolicy = Field(
        default=StalePolicy.WEIGHT,
        description="the auto-merge's hospitals whose newest vector is of an older generation: "
        "apply it to the current base weighted by (1 + staleness) ** -staleness_power, or "
        "exclude it (measured on a virtual clock: docs/merging.md)",
    )
    staleness_power: float = Field(default=0.5, ge=0, description="a in (1 + staleness) ** -a")

    running_sums: bool = Field(
        default=False,
        description="keep each base's running sums as vectors arrive, and build weighted-mean "
        "and task-arithmetic versions from them (reads two vectors, not N)",
    )
    sums_check_every_s: float = Field(
        default=86400.0, gt=0, description="sweeper: recompute and compare the sums this often"
    )
    auto_merge: bool = Field(
        default=True,
        description="merge a base once K new vectors (or, with every_s, anything new) arrived, "
        "without an admin asking; versions still wait for an admin's promotion unless "
        "auto_promote (measured on a virtual clock: docs/merging.md)",
    )
    auto_merge_k: int = Field(default=3, ge=1, description="new validated vectors per merge")
    auto_merge_strategy: str = Field(
        default="weighted_mean", description="the strategy of the auto-merge's versions"
    )
    auto_merge_params: dict[str, Any] = Field(
        default_factory=dict, description="the auto-merge strategy's parameters, a JSON object"
    )
    auto_merge_every_s: float | None = Field(
        default=None, gt=0, description="also merge on this schedule when anything new arrived"
    )
    policy_interval_s: float = Field(default=60.0, gt=0, description="beat: policy check period")
    sweep_interval_s: float = Field(default=300.0, gt=0, description="beat: sweeper period")
    stale_queued_s: float = Field(
        default=120.0, gt=0, description="a job queued this long without a worker is re-sent"
    )
    metrics_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="serve this worker machine's Prometheus metrics on this port (a worker "
        "on a machine without an API process); unset: the API's /metrics reads them",
    )
    metrics_host: str = Field(default="0.0.0.0", description="address of metrics_port")
    staging_max_age_s: float = Field(
        default=3600.0,
        gt=0,
        description="a staging file untouched this long that no open upload owns is removed, "
        "and so is a blob no row names that was not stored or claimed for this long",
    )

    @model_validator(mode="after")
    def _visibility_above_longest_task(self) -> Self:
        longest = max(self.merge_time_limit_s, self.eval_time_limit_s, self.tune_time_limit_s)
        if self.visibility_timeout_s <= longest:
            raise ValueError(
                f"MEDVEC_VISIBILITY_TIMEOUT_S ({self.visibility_timeout_s}) must exceed the "
                f"longest task time limit ({longest}), or Redis redelivers a task still running"
            )
        if self.eval_lease_s <= self.eval_time_limit_s:
            raise ValueError(
                f"MEDVEC_EVAL_LEASE_S ({self.eval_lease_s}) must exceed MEDVEC_EVAL_TIME_LIMIT_S "
                f"({self.eval_time_limit_s}), or a live evaluation is sent a second time"
            )
        if not self.share_holder_retry_s <= self.share_holder_retry_max_s:
            raise ValueError(
                "MEDVEC_SHARE_HOLDER_RETRY_S must not exceed MEDVEC_SHARE_HOLDER_RETRY_MAX_S"
            )
        for kind in ("merge", "eval", "tune"):
            if getattr(self, f"{kind}_soft_time_limit_s") >= getattr(self, f"{kind}_time_limit_s"):
                raise ValueError(
                    f"MEDVEC_{kind.upper()}_SOFT_TIME_LIMIT_S must be below the hard one"
                )
        return self


def worker_settings(settings: Settings) -> WorkerSettings:
    """``settings`` as :class:`WorkerSettings`: its values kept, worker fields from the env."""
    if isinstance(settings, WorkerSettings):
        return settings
    return WorkerSettings(**dict(settings))
