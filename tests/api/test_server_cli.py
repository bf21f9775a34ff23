"""``medvec-server``: minting the first admin token and migrating a server database."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from app import schema
from app.db import make_engine
from app.models import ApiToken, Role
from tests.api.helpers import server_cli


@pytest.fixture()
def run(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    def invoke(*args: str, database_url: str | None = None) -> Any:
        return server_cli(monkeypatch, tmp_path, database_url, *args)

    return invoke


def test_create_admin_token_stores_only_its_hash(run: Any, tmp_path: Path) -> None:
    result = run("create-admin-token", "--name", "ops")
    assert result.exit_code == 0, result.output
    token = result.stdout.strip().splitlines()[0]
    assert token.startswith("mv_") and len(token) == 46
    engine = make_engine(f"sqlite:///{tmp_path / 'registry.db'}")
    try:
        with engine.connect() as connection:
            rows = connection.execute(select(ApiToken.token_hash, ApiToken.role)).all()
    finally:
        engine.dispose()
    assert [(r.token_hash, r.role) for r in rows] == [
        (hashlib.sha256(token.encode()).hexdigest(), Role.ADMIN)
    ]


def test_print_only_stores_nothing(run: Any, tmp_path: Path) -> None:
    result = run("create-admin-token", "--print-only")
    assert result.exit_code == 0
    assert result.stdout.startswith("mv_")
    assert not (tmp_path / "registry.db").exists()


@pytest.mark.postgres
def test_migrate_brings_a_server_database_to_head(run: Any, postgres_database: Any) -> None:
    url = postgres_database()
    refused = run("create-admin-token", database_url=url)
    assert refused.exit_code != 0
    assert "medvec-server migrate" in str(refused.exception)
    migrated = run("migrate", database_url=url)
    assert migrated.exit_code == 0, migrated.output
    engine = make_engine(url)
    try:
        assert schema.current_revision(engine) == schema.head_revision()
    finally:
        engine.dispose()
    assert run("create-admin-token", database_url=url).exit_code == 0
