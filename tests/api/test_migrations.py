"""The Alembic migrations build, tear down and rebuild the schema; a registry on a server
database refuses to start on a stale schema and names the command to run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest
from alembic import command
from alembic.util import CommandError
from fastapi import FastAPI
from sqlalchemy import inspect

from app import schema
from app.config import Settings
from app.db import Base, make_engine
from app.main import create_app

TABLES = set(Base.metadata.tables)


def _start_and_stop(app: FastAPI) -> None:
    """Run the application's lifespan (start-up then shutdown), as a server would."""

    async def run() -> None:
        async with app.router.lifespan_context(app):
            pass

    anyio.run(run)


def _tables(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def _round_trip(url: str) -> None:
    engine = make_engine(url)
    try:
        schema.upgrade(engine)
        assert TABLES <= _tables(url)
        assert schema.current_revision(engine) == schema.head_revision()
        schema.downgrade(engine, "base")
        assert _tables(url) <= {"alembic_version"}
        assert schema.current_revision(engine) is None
        schema.upgrade(engine)
        assert TABLES <= _tables(url)
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_upgrade_and_downgrade_on_postgres(postgres_database: Any) -> None:
    _round_trip(postgres_database())


def test_upgrade_and_downgrade_on_sqlite(tmp_path: Path) -> None:
    _round_trip(f"sqlite:///{tmp_path / 'm.db'}")


@pytest.mark.postgres
def test_server_database_must_be_migrated_first(postgres_database: Any, tmp_path: Path) -> None:
    settings = Settings(environment="test", data_dir=tmp_path, database_url=postgres_database())
    with pytest.raises(schema.SchemaOutOfDate, match="medvec-server migrate"):
        _start_and_stop(create_app(settings))


def test_embedded_default_migrates_itself(tmp_path: Path) -> None:
    settings = Settings(environment="test", data_dir=tmp_path)
    _start_and_stop(create_app(settings))
    assert TABLES <= _tables(settings.resolved_database_url)


def test_production_refuses_the_embedded_defaults(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="MEDVEC_DATABASE_URL"):
        Settings(environment="production", data_dir=tmp_path)


def test_version_calibration_columns_come_and_go_with_their_migration(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    engine = make_engine(url)
    try:
        schema.upgrade(engine)
        columns = {c["name"] for c in inspect(engine).get_columns("model_versions")}
        assert {"calibration", "mergeability"} <= columns
        schema.downgrade(engine, "a69d1b20dce7")
        columns = {c["name"] for c in inspect(engine).get_columns("model_versions")}
        assert not {"calibration", "mergeability"} & columns
    finally:
        engine.dispose()


def test_offline_sql_renders_around_the_row_converting_revision(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``alembic upgrade --sql`` renders every revision that needs no rows, and for the one
    that converts rows in Python names the online command instead of crashing."""
    config = schema.alembic_config("postgresql+psycopg://")
    command.upgrade(config, "b71f0d5e2c94", sql=True)
    assert "CREATE TABLE merge_jobs" in capsys.readouterr().out
    with pytest.raises(CommandError, match="medvec-server migrate 3b8e5f0a9c21"):
        command.upgrade(config, "head", sql=True)
    capsys.readouterr()
    command.upgrade(config, "3b8e5f0a9c21:head", sql=True)
    rendered = capsys.readouterr().out
    assert "UPDATE alembic_version" in rendered
    head = schema.head_revision()
    assert head is not None and head in rendered
