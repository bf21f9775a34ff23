"""PostgreSQL connections terminated under a live registry (an operator's
``pg_terminate_backend``, a failover, a restart): the request caught mid-way answers 503
with ``Retry-After`` and the usual error body, not 500, and the registry serves the
next requests without a restart."""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from app import schema
from app.config import Settings
from app.db import make_engine
from app.storage import LocalBlobStore
from tests.api.conftest import Registry, _libpq, _serve
from tests.api.helpers import error

pytestmark = pytest.mark.postgres

TERMINATE_OTHERS = (
    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
)
WAITING_ON_A_LOCK = (
    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
    "AND wait_event_type = 'Lock'"
)


@pytest.fixture(scope="module")
def pg_registry(postgres_database: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A registry on its own PostgreSQL database (its connections get terminated here)."""
    url = postgres_database()
    data_dir = tmp_path_factory.mktemp("registry-dbloss")
    admin_token = "mv_" + secrets.token_urlsafe(32)
    settings = Settings(
        environment="test", data_dir=data_dir, database_url=url, bootstrap_admin_token=admin_token
    )
    engine = make_engine(url)
    schema.upgrade(engine)
    server, thread, base_url = _serve(settings)
    yield Registry(base_url, admin_token, settings, engine, LocalBlobStore(data_dir / "blobs"), "")
    server.should_exit = True
    thread.join(timeout=30)
    engine.dispose()


def _database(registry: Registry) -> str:
    url = str(registry.settings.database_url)
    server, name = url.rsplit("/", 1)
    return _libpq(server, name)


def _while_blocked(registry: Registry, request: Any) -> httpx.Response:
    """Run ``request`` in a thread until its transaction waits on a table lock the test
    holds, terminate every other connection of the database, and return its answer."""
    answers: list[httpx.Response] = []
    with psycopg.connect(_database(registry)) as locker:
        locker.execute("LOCK TABLE api_tokens IN ACCESS EXCLUSIVE MODE")
        thread = threading.Thread(target=lambda: answers.append(request()))
        thread.start()
        deadline = time.monotonic() + 60
        while locker.execute(WAITING_ON_A_LOCK).fetchone() == (0,):
            assert time.monotonic() < deadline, "the request never reached the database"
            time.sleep(0.05)
        terminated = locker.execute(TERMINATE_OTHERS).fetchall()
        assert terminated, "no connection to terminate"
        locker.rollback()
        thread.join(60)
    assert answers, "the request did not return"
    return answers[0]


def test_terminated_connections_answer_503_and_the_registry_recovers(
    pg_registry: Registry, tmp_path: Path
) -> None:
    with pg_registry.admin() as admin:
        assert admin.get("/hospitals").status_code == 200  # the pool holds live connections
        response = _while_blocked(pg_registry, lambda: admin.get("/hospitals"))
        assert response.status_code == 503, response.text
        assert response.headers["retry-after"] == "5"
        body = error(response)
        assert body["code"] == "database_unavailable"
        assert "send it again" in body["message"] and body["detail"] is None

        # every pooled connection was terminated too: each is found dead and replaced
        for index in range(8):
            created = admin.post("/hospitals", json={"name": f"after-{index}"})
            assert created.status_code == 201, created.text
        assert len(admin.get("/hospitals").json()) >= 8

        write = _while_blocked(
            pg_registry, lambda: admin.post("/hospitals", json={"name": "mid-write"})
        )
        assert write.status_code == 503, write.text
        names = [h["name"] for h in admin.get("/hospitals").json()]
        assert "mid-write" not in names  # rolled back: sending it again is what it says
        again = admin.post("/hospitals", json={"name": "mid-write"})
        assert again.status_code == 201, again.text
