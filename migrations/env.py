"""Alembic environment: metadata from ``app.models``, URL from ``app.config.Settings``.

A caller may hand over an open connection (``config.attributes["connection"]``), which
is how ``app.schema`` runs them at start-up and how the tests migrate their database.
"""

from __future__ import annotations

import app.models  # noqa: F401  (registers every table on Base.metadata)
from app.config import Settings
from app.db import Base
from app.migrating import run_env

run_env(Base.metadata, lambda: Settings().resolved_database_url)
