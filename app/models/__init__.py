"""Every ORM model, imported here so that ``Base.metadata`` (and Alembic) sees them all."""

from app.models.audit import AuditEvent
from app.models.base_model import BaseModelRecord
from app.models.benchmark import Benchmark
from app.models.evaluation import Evaluation, EvaluationStatus
from app.models.hospital import ApiToken, Hospital, Role
from app.models.merge import JobStatus, MergeJob
from app.models.upload import UploadSession, UploadStatus
from app.models.vector import DataVector, VectorStatus
from app.models.version import ModelVersion, VersionInput, VersionStatus

__all__ = [
    "ApiToken",
    "AuditEvent",
    "BaseModelRecord",
    "Benchmark",
    "DataVector",
    "Evaluation",
    "EvaluationStatus",
    "Hospital",
    "JobStatus",
    "MergeJob",
    "ModelVersion",
    "Role",
    "UploadSession",
    "UploadStatus",
    "VectorStatus",
    "VersionInput",
    "VersionStatus",
]
