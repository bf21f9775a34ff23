"""Every ORM model, imported here so that ``Base.metadata`` (and Alembic) sees them all."""

from app.models.audit import AuditEvent
from app.models.base_model import BaseModelRecord, BaseStatus
from app.models.benchmark import Benchmark
from app.models.console import ConsoleSession
from app.models.evaluation import Evaluation, EvaluationStatus
from app.models.hospital import ApiToken, Hospital, Role
from app.models.merge import JobStatus, MergeJob
from app.models.privacy import PrivacyBudget
from app.models.running_sum import RunningSum, RunningSumMember
from app.models.upload import UploadSession, UploadStatus
from app.models.vector import DataVector, VectorStatus
from app.models.version import ModelVersion, VersionInput, VersionStatus

__all__ = [
    "ApiToken",
    "AuditEvent",
    "BaseModelRecord",
    "BaseStatus",
    "Benchmark",
    "ConsoleSession",
    "DataVector",
    "Evaluation",
    "EvaluationStatus",
    "Hospital",
    "JobStatus",
    "MergeJob",
    "ModelVersion",
    "PrivacyBudget",
    "Role",
    "RunningSum",
    "RunningSumMember",
    "UploadSession",
    "UploadStatus",
    "VectorStatus",
    "VersionInput",
    "VersionStatus",
]
