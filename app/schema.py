"""Running and checking the Alembic migrations from code (start-up, tests, the CLI)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

import migrations
from app import migrating

MIGRATE_COMMAND = "medvec-server migrate"


class SchemaOutOfDate(RuntimeError):
    """The database is not at the migrations' head; the message says what to run."""


SCRIPT_LOCATION = Path(migrations.__file__).parent


def alembic_config(url: str) -> Config:
    """An Alembic config that needs no ini or pyproject file (works when installed)."""
    return migrating.alembic_config(SCRIPT_LOCATION, url)


def head_revision() -> str | None:
    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    return script.get_current_head()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    migrating.upgrade(engine, SCRIPT_LOCATION, revision)


def downgrade(engine: Engine, revision: str) -> None:
    with engine.begin() as connection:
        config = alembic_config(engine.url.render_as_string(hide_password=False))
        config.attributes["connection"] = connection
        command.downgrade(config, revision)


def check_up_to_date(engine: Engine) -> None:
    current, head = current_revision(engine), head_revision()
    if current != head:
        raise SchemaOutOfDate(
            f"the database schema is at revision {current or 'none (empty database)'}, "
            f"this registry needs {head}: run `{MIGRATE_COMMAND}` "
            "(or `alembic upgrade head`) with the same MEDVEC_DATABASE_URL, then start again"
        )
