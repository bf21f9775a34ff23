"""Alembic environment of the share holder: its own metadata, its own version table.

The share holder's database is its own; ``aggregator_alembic_version`` keeps its
revision apart from the registry's even if an operator points both at one database.
"""

from __future__ import annotations

from aggregator.config import AggregatorSettings
from aggregator.models import AggBase
from app.migrating import run_env

VERSION_TABLE = "aggregator_alembic_version"

run_env(
    AggBase.metadata,
    lambda: AggregatorSettings().resolved_database_url,
    version_table=VERSION_TABLE,
)
