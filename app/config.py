"""Registry settings from ``MEDVEC_*`` environment variables, with an embedded default.

With nothing set, the registry runs on a SQLite file and a blob folder inside
``data_dir`` (``./medvec-data``) and needs no external service. Setting
``MEDVEC_DATABASE_URL=postgresql+psycopg://...`` runs the same code on PostgreSQL.
"""

from __future__ import annotations

import enum
from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Self

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MIB = 1 << 20


class Environment(enum.StrEnum):
    DEV = "dev"
    TEST = "test"
    PRODUCTION = "production"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MEDVEC_", env_file=None, extra="ignore")

    environment: Environment = Environment.DEV
    data_dir: Path = Path("medvec-data")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; default: SQLite file registry.db in data_dir"
    )
    redis_url: str | None = None
    max_upload_bytes: int = Field(default=2048 * MIB, gt=0)
    max_header_bytes: int = Field(default=16 * MIB, gt=0)
    max_vector_norm: float | None = Field(default=1.0e4, gt=0)
    upload_expiry: timedelta = timedelta(hours=24)
    bootstrap_admin_token: SecretStr | None = None
    auto_migrate: bool | None = Field(
        default=None,
        description="run migrations at start-up; default: only on the embedded SQLite",
    )

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'registry.db').absolute()}"

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
