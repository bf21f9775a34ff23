"""Alembic from code, for the registry's migrations and the share holder's alike.

Each server has its own migrations folder, metadata and version table; what runs them is
the same: a config that needs no ini file (so it works when installed), ``upgrade`` on an
engine, and the body of each ``env.py`` (on the connection a caller handed over in
``config.attributes["connection"]``, else on an engine for ``-x url=...`` or the settings'
URL).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from alembic import command, context
from alembic.config import Config
from sqlalchemy import Connection, Engine, MetaData

from app.db import make_engine

FILE_TEMPLATE = "%%(year)d_%%(month).2d_%%(day).2d-%%(rev)s_%%(slug)s"


def alembic_config(script_location: Path, url: str) -> Config:
    """An Alembic config for the migrations in ``script_location`` and database ``url``."""
    config = Config()
    config.set_main_option("script_location", str(script_location))
    config.set_main_option("file_template", FILE_TEMPLATE)
    config.attributes["url"] = url
    return config


def upgrade(engine: Engine, script_location: Path, revision: str = "head") -> None:
    """Bring ``engine``'s database to ``revision`` of those migrations (idempotent)."""
    with engine.begin() as connection:
        config = alembic_config(script_location, engine.url.render_as_string(hide_password=False))
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def run_env(
    metadata: MetaData, default_url: Callable[[], str], *, version_table: str = "alembic_version"
) -> None:
    """The body of an ``env.py``: run the migrations offline or online."""
    config = context.config

    def url() -> str:
        given = context.get_x_argument(as_dictionary=True).get("url")
        given = given or config.attributes.get("url")
        return str(given) if given else default_url()

    def configure(connection: Connection) -> None:
        context.configure(
            connection=connection,
            target_metadata=metadata,
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
            version_table=version_table,
        )

    if context.is_offline_mode():
        context.configure(
            url=url(),
            target_metadata=metadata,
            literal_binds=True,
            dialect_opts={"paramstyle": "named"},
            render_as_batch=url().startswith("sqlite"),
            version_table=version_table,
        )
        with context.begin_transaction():
            context.run_migrations()
        return
    connection = config.attributes.get("connection")
    if connection is not None:
        configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = make_engine(url())
    with engine.connect() as connection:
        configure(connection)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()
