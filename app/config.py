"""Registry settings from ``MEDVEC_*`` environment variables, with an embedded default.

With nothing set, the registry runs on a SQLite file and a blob folder inside
``data_dir`` (``./medvec-data``) and needs no external service. Setting
``MEDVEC_DATABASE_URL=postgresql+psycopg://...`` runs the same code on PostgreSQL, and
``MEDVEC_BLOB_URL=s3://bucket/prefix`` keeps the blobs in S3-compatible storage that
every API and worker machine reaches.
"""

from __future__ import annotations

import enum
from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Self

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MIB = 1 << 20
GIB = 1 << 30
S3_MIN_PART = 5 * MIB
"""S3's smallest multipart part (every part but the last)."""


class Environment(enum.StrEnum):
    DEV = "dev"
    TEST = "test"
    PRODUCTION = "production"


class AutoGeneration(enum.StrEnum):
    """Which versions start a generation without an admin (``MEDVEC_AUTO_GENERATION``)."""

    MERGED = "merged"
    PROMOTED = "promoted"
    OFF = "off"

    @classmethod
    def _missing_(cls, value: object) -> AutoGeneration | None:
        """The boolean values of the earlier setting: true was ``promoted``, false ``off``."""
        text = str(value).strip().lower()
        if text in {"true", "1", "yes", "on"}:
            return cls.PROMOTED
        if text in {"false", "0", "no"}:
            return cls.OFF
        return None


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MEDVEC_", env_file=None, extra="ignore")

    environment: Environment = Field(
        default=Environment.DEV,
        description="dev, test or production; production refuses SQLite and a malformed "
        "bootstrap token",
    )
    data_dir: Path = Field(
        default=Path("medvec-data"),
        description="the SQLite file (embedded default), blobs/ and staging files",
    )
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; default: SQLite file registry.db in data_dir"
    )
    redis_url: str | None = Field(
        default=None,
        description="Celery broker and result backend of the workers; default: the embedded "
        "worker thread inside the registry process",
    )
    max_upload_bytes: int = Field(
        default=2048 * MIB,
        gt=0,
        description="largest file accepted (vector, base, benchmark); larger bodies get 413 "
        "while streaming",
    )
    max_header_bytes: int = Field(
        default=16 * MIB, gt=0, description="largest safetensors header accepted"
    )
    max_vector_norm: float | None = Field(
        default=1.0e4, gt=0, description="L2-norm bound on data vectors (unset: none)"
    )
    upload_expiry: timedelta = Field(
        default=timedelta(hours=24),
        description="an upload session idle this long expires and its bytes are deleted",
    )
    bootstrap_admin_token: SecretStr | None = Field(
        default=None,
        description="hashed and inserted at start-up when no usable admin token exists "
        "(medvec-server create-admin-token --print-only makes one)",
    )
    auto_migrate: bool | None = Field(
        default=None,
        description="run migrations at start-up; default: only on the embedded SQLite",
    )
    blob_url: str | None = Field(
        default=None,
        pattern=r"^s3://[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9](/.*)?$",
        description="s3://bucket/prefix for S3-compatible blob storage; default: data_dir/blobs",
    )
    s3_endpoint_url: str | None = Field(
        default=None, description="S3 API endpoint (MinIO, Ceph, ...); default: AWS"
    )
    s3_region: str | None = Field(
        default=None, description="region of the bucket; default: boto3's"
    )
    s3_part_size: int = Field(
        default=8 * MIB,
        ge=S3_MIN_PART,
        description="part size of the multipart uploads that commit blobs to S3",
    )
    blob_cache_max_bytes: int = Field(
        default=20 * GIB,
        gt=0,
        description="S3 only: local copies of blobs kept for readers that need a file",
    )
    metrics_enabled: bool = Field(default=True, description="serve Prometheus metrics")
    metrics_token: SecretStr | None = Field(
        default=None,
        description="when set, GET /metrics needs `Authorization: Bearer <token>`",
    )
    metrics_dir: Path | None = Field(
        default=None,
        description="prometheus-client's multiprocess directory (PROMETHEUS_MULTIPROC_DIR), "
        "shared by the API and worker processes of one machine; default: data_dir/metrics",
    )

    screening_enabled: bool = Field(
        default=True,
        description="screen every accepted vector (worker task) and quarantine outliers; "
        "auto-merge waits for a base's vectors to be screened",
    )
    screening_norm_k: float | None = Field(
        default=3.0,
        gt=1,
        description="quarantine a vector whose norm exceeds k x the median norm of the other "
        "hospitals' current vectors (unset: no norm rule)",
    )
    screening_min_peers: int = Field(
        default=3,
        ge=1,
        description="other hospitals' vectors the norm, cosine and peer accuracy rules need",
    )
    screening_min_cosine: float | None = Field(
        default=0.005,
        ge=-1,
        le=1,
        description="quarantine a vector whose cosine to the mean of the other hospitals' "
        "current vectors is at or below this (negative or near-orthogonal; unset: no rule)",
    )
    screening_accuracy_margin: float | None = Field(
        default=0.3,
        ge=0,
        le=1,
        description="quarantine a vector when base + vector is this much less accurate on the "
        "validation images than the median of the other hospitals' vectors (unset: no rule)",
    )
    screening_max_images: int = Field(
        default=500, gt=0, description="validation images screening evaluates on, at most"
    )
    gate_metrics: list[str] = Field(
        default=["accuracy", "balanced_accuracy", "auc_macro"],
        description="overall metrics a candidate must not lose against production",
    )
    gate_tolerance: float = Field(
        default=0.0, ge=0, description="how much an overall gate metric may drop"
    )
    gate_class_metrics: list[str] = Field(
        default=[],
        description="per-class metrics (sensitivity, specificity, auc) a candidate must not "
        "lose against production, a JSON list (e.g. '[\"sensitivity\"]'); none by default: "
        "the per-class rule locked a degenerate first version in production (docs/merging.md)",
    )
    gate_class_tolerance: float = Field(
        default=0.05, ge=0, description="how much a per-class gate metric may drop"
    )
    gate_noise_z: float = Field(
        default=1.645,
        ge=0,
        description="a gate metric's drop fails only beyond this many standard errors of the "
        "difference (sampling noise of the split's images; 0: compare point estimates only)",
    )
    gate_sensitivity_floor: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="every per-class sensitivity of a candidate must be at least this",
    )
    auto_promote: bool = Field(
        default=False,
        description="promote a version to production once its evaluation passes the gate",
    )
    auto_generation: AutoGeneration = Field(
        default=AutoGeneration.MERGED,
        description="which versions become the base of a new generation, the one hospitals "
        "pull and push against: merged (every auto-merged version of the current base; "
        "production still follows the gate), promoted (a version auto-promotion promotes; "
        "`true` before), or off (`false`: an admin starts generations with "
        "POST /versions/{id}/generation)",
    )
    share_holder_url: str | None = Field(
        default=None,
        description="secure mode: base URL of the share holder (`medvec-aggregator`)",
    )
    share_holder_token: SecretStr | None = Field(
        default=None, description="secure mode: the registry's token at the share holder"
    )
    secure_min_set_size: int = Field(
        default=3, ge=2, description="secure mode: K, the fewest shares a secure merge sums"
    )
    console_secret_key: SecretStr | None = Field(
        default=None,
        description="key that signs console session cookies; the same on every API replica; "
        "default: a random key per process (sessions end when it restarts)",
    )
    console_session_ttl: timedelta = Field(
        default=timedelta(hours=8), description="how long a console sign-in lasts"
    )

    @field_validator("blob_url", "s3_endpoint_url", "s3_region", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        """``MEDVEC_BLOB_URL=`` (as a compose file's ``${VAR:-}`` gives) means unset."""
        return None if value == "" else value

    @property
    def embedded_database_path(self) -> Path:
        """The SQLite file of the embedded default (used when ``database_url`` is unset)."""
        return (self.data_dir / "registry.db").absolute()

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.embedded_database_path}"

    @property
    def resolved_metrics_dir(self) -> Path:
        return self.metrics_dir or self.data_dir / "metrics"

    @property
    def is_embedded_db(self) -> bool:
        return self.database_url is None

    @property
    def migrate_on_start(self) -> bool:
        return self.is_embedded_db if self.auto_migrate is None else self.auto_migrate

    @model_validator(mode="after")
    def _refuse_insecure_defaults(self) -> Self:
        """Outside dev and test, refuse the embedded defaults meant for one machine."""
        if self.environment is not Environment.PRODUCTION:
            return self
        problems = []
        if self.database_url is None or self.database_url.startswith("sqlite"):
            problems.append("MEDVEC_DATABASE_URL must name a server database (PostgreSQL)")
        if self.bootstrap_admin_token is not None:
            token = self.bootstrap_admin_token.get_secret_value()
            if not token.startswith("mv_") or len(token) < 40:
                problems.append(
                    "MEDVEC_BOOTSTRAP_ADMIN_TOKEN must be a minted token "
                    "(`medvec-server create-admin-token --print-only`)"
                )
        if problems:
            raise ValueError("insecure settings for production: " + "; ".join(problems))
        return self


@lru_cache
def get_settings() -> Settings:
    """Settings from the environment, read once per process (entry points only)."""
    return Settings()
