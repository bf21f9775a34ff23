"""Share holder settings from ``MEDVEC_AGG_*`` variables, with an embedded default.

With nothing set it runs on a SQLite file and a blob folder in ``data_dir``
(``./medvec-aggregator-data``); ``MEDVEC_AGG_DATABASE_URL=postgresql+psycopg://...`` runs
it on PostgreSQL. It shares no setting, database or directory with the registry.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

MIB = 1 << 20


class AggregatorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MEDVEC_AGG_", env_file=None, extra="ignore")

    data_dir: Path = Field(
        default=Path("medvec-aggregator-data"),
        description="the SQLite file (embedded default) and the stored shares",
    )
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; default: SQLite file aggregator.db in data_dir"
    )
    min_set_size: int = Field(
        default=3, ge=2, description="K: the fewest shares a released sum may cover"
    )
    max_upload_bytes: int = Field(
        default=4096 * MIB, gt=0, description="largest share accepted; larger bodies get 413"
    )
    max_header_bytes: int = Field(
        default=16 * MIB, gt=0, description="largest safetensors header accepted"
    )
    upload_expiry: timedelta = Field(
        default=timedelta(hours=24),
        description="an upload session idle this long expires and its bytes are deleted",
    )
    bootstrap_admin_token: SecretStr | None = Field(
        default=None,
        description="the share holder's first admin token, hashed and inserted at start-up",
    )

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'aggregator.db').absolute()}"
