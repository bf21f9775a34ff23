"""Running the share holder's Alembic migrations from code (start-up and the CLI)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine

import aggregator.migrations
from app import migrating

SCRIPT_LOCATION = Path(aggregator.migrations.__file__).parent


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the share holder's database to ``revision`` (idempotent)."""
    migrating.upgrade(engine, SCRIPT_LOCATION, revision)
