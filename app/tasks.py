"""Every background task: its name and its typed payload, in one place.

The names are the contract between whoever sends a task (the API's services, the worker's
own follow-ups, the sweeper, beat) and the Celery wrappers that run it (``worker.tasks``,
``worker.runner``). A payload holds ids and small values only; it is what is sent (after
the transaction that made it needed commits: ``app.jobs.defer_job``) and what a wrapper
validates before it runs anything, so a malformed or outdated message fails at the
door with its name, not deep inside a job.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict

from app.models import MergeJob

__all__ = [
    "TASKS",
    "BaseVerify",
    "ContributionsRun",
    "EvaluateRun",
    "JobTask",
    "MergeFinish",
    "MergeRun",
    "PolicyCheck",
    "SecureMergeRun",
    "SumsRefresh",
    "SweepRun",
    "Task",
    "TuneRun",
    "VectorAccepted",
    "merge_task",
]


class Task(BaseModel):
    """One task's payload; ``name`` is the task it is sent to."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: ClassVar[str]

    def kwargs(self) -> dict[str, Any]:
        """The message's keyword arguments (JSON)."""
        return self.model_dump(mode="json")


class JobTask(Task):
    """A task that runs (part of) one merge job, named by its row's id."""

    job_id: str


class MergeRun(JobTask):
    """Run a merge job (torch-free: ``worker.merge_main`` can serve it alone)."""

    name = "medvec.merge.run"


class TuneRun(JobTask):
    """Run a merge job that chooses its lambda on validation first."""

    name = "medvec.tune.run"


class SecureMergeRun(JobTask):
    """Run a secure merge job: the shares' sums from the share holder, unmasked here."""

    name = "medvec.secure.merge"


class MergeFinish(JobTask):
    """Recalibrate and record a merge the merge queue wrote (``MEDVEC_MERGE_QUEUE``); sent
    by the merge worker only, never by the registry."""

    name = "medvec.merge.finish"
    merged_sha256: str
    cosine: float | None = None
    from_sums: bool = False


class EvaluateRun(Task):
    """Evaluate a version on a benchmark's split; then the auto-promotion policy."""

    name = "medvec.evaluate.run"
    version_id: str
    benchmark_id: str
    split: str = "test"


class PolicyCheck(Task):
    """The auto-merge policy (beat, and after a vector); ``base_id``: the vector's, for the log."""

    name = "medvec.policy.check"
    base_id: str | None = None


class VectorAccepted(Task):
    """The registry accepted a vector: screening, then the running sums, then the policy."""

    # messages of earlier releases also carried the vector's base_id, read from the row now
    model_config = ConfigDict(frozen=True, extra="ignore")

    name = "medvec.vectors.accepted"
    vector_id: str


class SumsRefresh(Task):
    """Bring one base's running sums up to date (a hospital left)."""

    name = "medvec.sums.refresh"
    base_id: str


class ContributionsRun(Task):
    """Each input hospital's leave-one-out contribution to a version."""

    name = "medvec.contributions.run"
    version_id: str


class BaseVerify(Task):
    """Check a new base's tensors against its architecture."""

    name = "medvec.bases.verify"
    base_id: str


class SweepRun(Task):
    """Re-send work that lost its message or worker; compare running sums periodically."""

    name = "medvec.sweep.run"


TASKS: tuple[type[Task], ...] = (
    MergeRun,
    TuneRun,
    SecureMergeRun,
    MergeFinish,
    EvaluateRun,
    PolicyCheck,
    VectorAccepted,
    SumsRefresh,
    ContributionsRun,
    BaseVerify,
    SweepRun,
)


def merge_task(job: MergeJob) -> JobTask:
    """The task that runs merge job ``job``: a secure merge, a tuned one, or a plain one."""
    if job.params.get("secure"):
        return SecureMergeRun(job_id=job.id)
    return TuneRun(job_id=job.id) if job.lambda_grid is not None else MergeRun(job_id=job.id)
