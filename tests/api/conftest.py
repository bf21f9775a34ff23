"""The real registry, served by uvicorn on a loopback port, on SQLite and on PostgreSQL.

Every test using ``registry`` runs once per backend. The PostgreSQL database has a
random name, is built by the Alembic migrations (never ``create_all``) and is dropped
at the end of the session. ``MEDVEC_TEST_POSTGRES`` overrides the server URL.
"""

from __future__ import annotations

import io
import os
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psycopg
import pytest
import uvicorn
from fastapi import FastAPI
from selenium import webdriver
from sqlalchemy import Engine, func, select, update
from sqlalchemy.orm import Session

from app import schema
from app.config import Settings
from app.db import Base, make_engine
from app.main import create_app
from app.storage import BlobStore, LocalBlobStore
from hospital_cli.demo.server import free_port
from medvec.hashing import sha256_file
from tests.api.factories import ModelKit, make_model_kit
from tests.browser import chromium
from tests.scratch import scratch_dir
from worker.bases import verify_base
from worker.config import WorkerSettings

POSTGRES = os.environ.get("MEDVEC_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432")
MIB = 1 << 20
MAX_UPLOAD = 64 * MIB
MAX_HEADER = 1 * MIB
MAX_NORM = 1000.0
API = "/api/v1"


def _libpq(url: str, dbname: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://") + f"/{dbname}"


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[Any]:
    """A factory of fresh PostgreSQL databases (random names), all dropped at the end."""
    made: list[str] = []

    def create() -> str:
        name = f"medvec_test_{secrets.token_hex(6)}"
        with psycopg.connect(_libpq(POSTGRES, "postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        made.append(name)
        return f"{POSTGRES}/{name}"

    yield create
    with psycopg.connect(_libpq(POSTGRES, "postgres"), autocommit=True) as conn:
        for name in made:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@dataclass
class Registry:
    url: str
    admin_token: str
    settings: Settings
    engine: Engine
    store: LocalBlobStore
    backend: str

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url + API, headers=headers, timeout=120)

    def admin(self) -> httpx.Client:
        return self.client(self.admin_token)

    def session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    def worker_settings(self, **overrides: Any) -> WorkerSettings:
        """A worker's settings on this registry's database and data folder."""
        return WorkerSettings(
            environment=self.settings.environment,
            data_dir=self.settings.data_dir,
            database_url=self.settings.resolved_database_url,
            **{"auto_merge": False, **overrides},
        )

    def snapshot(self) -> dict[str, Any]:
        """Row counts of every table, the stored blobs and leftover staging temp files."""
        with self.engine.connect() as connection:
            counts = {
                name: connection.execute(select(func.count()).select_from(table)).scalar_one()
                for name, table in Base.metadata.tables.items()
            }
        temps = sorted(p.name for p in self.store.staging.glob("*.tmp"))
        return {"rows": counts, "blobs": self.store.iter_blobs(), "staging_tmp": temps}

    def stored_blob(self) -> tuple[str, int]:
        """A small, distinct, readable benchmark file committed to the store: (sha256,
        size). Benchmark rows the tests invent point at one, so that the shared registry
        stays consistent (fsck) and a worker that picks it (screening) can read it."""
        images = np.random.default_rng().integers(0, 256, (2, 28, 28), dtype=np.uint8)
        labels = np.array([[0], [1]])
        splits = {f"{s}_{k}": v for s in ("train", "val", "test")
                  for k, v in (("images", images), ("labels", labels))}  # fmt: skip
        buffer = io.BytesIO()
        np.savez(buffer, **splits)  # type: ignore[arg-type]
        staged = self.store.staging_path()
        staged.write_bytes(buffer.getvalue())
        digest = sha256_file(staged)
        return digest, self.store.commit(staged, digest).size

    def expire(self, model: Any, row_id: str) -> None:
        with self.engine.begin() as connection:
            connection.execute(
                update(model).where(model.id == row_id).values(expires_at=model.created_at)
            )


def _serve(settings: Settings) -> tuple[uvicorn.Server, threading.Thread, str]:
    return serve_app(create_app(settings), "the registry")


def serve_app(app: FastAPI, name: str) -> tuple[uvicorn.Server, threading.Thread, str]:
    """``app`` served by uvicorn on a loopback port in a daemon thread, once it started."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started and thread.is_alive():
        time.sleep(0.05)
    if not server.started:
        pytest.fail(f"{name} did not start")
    return server, thread, f"http://127.0.0.1:{port}"


@contextmanager
def serve_registry(
    backend: str, data_dir: Path, database_url: str | None, **settings: Any
) -> Iterator[Registry]:
    """A registry on ``backend`` (its database built by the migrations on PostgreSQL, as
    `medvec-server migrate` does before the API starts) with ``settings``, served until
    the block ends."""
    admin_token = "mv_" + secrets.token_urlsafe(32)
    configured = Settings(
        environment="test",
        data_dir=data_dir,
        database_url=database_url,
        bootstrap_admin_token=admin_token,
        max_header_bytes=MAX_HEADER,
        **settings,
    )
    engine = make_engine(configured.resolved_database_url)
    if database_url:
        schema.upgrade(engine)
    server, thread, url = _serve(configured)
    store = LocalBlobStore(data_dir / "blobs")
    try:
        yield Registry(url, admin_token, configured, engine, store, backend)
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        engine.dispose()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every test of the live registry runs on its embedded SQLite default; those marked
    ``databases`` (where the database's own behaviour is under test: concurrency, locking,
    supersede races, what it refuses to store) run on PostgreSQL too."""
    if "backend" not in metafunc.fixturenames:
        return
    backends: list[Any] = ["sqlite"]
    if metafunc.definition.get_closest_marker("databases"):
        backends.append(pytest.param("postgres", marks=pytest.mark.postgres))
    metafunc.parametrize("backend", backends, scope="session")


@contextmanager
def live_registry(
    backend: str, tmp_path_factory: pytest.TempPathFactory, postgres_database: Any, name: str
) -> Iterator[Registry]:
    """A registry of the API tests' settings on ``backend``, in a scratch folder of its own
    (``name``), removed when the block ends."""
    database_url = postgres_database() if backend == "postgres" else None
    with (
        scratch_dir(tmp_path_factory, f"{name}-{backend}") as data_dir,
        serve_registry(
            backend, data_dir, database_url, max_upload_bytes=MAX_UPLOAD, max_vector_norm=MAX_NORM
        ) as registry,
    ):
        yield registry


@pytest.fixture(scope="session")
def registry(
    backend: str,
    tmp_path_factory: pytest.TempPathFactory,
    postgres_database: Any,
) -> Iterator[Registry]:
    """The live registry the API tests share (one per test process and backend); a module
    that judges everything stored overrides it (:func:`registry_of_the_module`)."""
    with live_registry(backend, tmp_path_factory, postgres_database, "registry") as registry:
        yield registry


@pytest.fixture(scope="session")
def kit(tmp_path_factory: pytest.TempPathFactory, datasets_dir: Path) -> Iterator[ModelKit]:
    with scratch_dir(tmp_path_factory, "models") as folder:
        yield make_model_kit(folder, datasets_dir)


@pytest.fixture(autouse=True)
def _kit_files_of_the_test(request: pytest.FixtureRequest) -> Iterator[None]:
    """Remove the files the kit wrote for a test once it ends (a vector is 43 MB, and
    the API tests write hundreds): the registry keeps its own copies."""
    if "kit" not in request.fixturenames:
        yield
        return
    kit: ModelKit = request.getfixturevalue("kit")
    with kit.files_of_one_test():
        yield


@pytest.fixture(scope="session")
def base(registry: Registry, kit: ModelKit) -> dict[str, Any]:
    return post_base(registry, kit, "r18-test")


def registry_of_the_module(name: str) -> tuple[Any, Any]:
    """Module-scoped ``registry`` and ``base`` fixtures that override the shared ones with
    a registry of the module's own, for a module whose tests judge everything stored in
    it (``registry, base = registry_of_the_module("fsck")``): the shared registry holds
    whatever other modules stored, in whatever order they ran."""

    @pytest.fixture(scope="module", name="registry")
    def own_registry(
        backend: str, tmp_path_factory: pytest.TempPathFactory, postgres_database: Any
    ) -> Iterator[Registry]:
        with live_registry(backend, tmp_path_factory, postgres_database, name) as registry:
            yield registry

    @pytest.fixture(scope="module", name="base")
    def own_base(registry: Registry, kit: ModelKit) -> dict[str, Any]:
        return post_base(registry, kit, f"r18-{name}")

    return own_registry, own_base


def post_base(registry: Registry, kit: ModelKit, name: str) -> dict[str, Any]:
    """Register the kit's base as ``name`` and verify it, as a worker would; the base as
    the registry then returns it."""
    with registry.admin() as admin, kit.base_path.open("rb") as body:
        response = admin.post(
            "/bases",
            params={"name": name},
            content=body,
            headers={"Content-Type": "application/octet-stream"},
        )
    assert response.status_code in (200, 201), response.text
    assert verify(registry.engine, registry.store, response.json()["id"]) == "ready"
    with registry.admin() as admin:
        return dict(admin.get(f"/bases/{response.json()['id']}").json())


def verify(engine: Engine, store: BlobStore, base_id: str) -> str:
    """Run the worker's architecture check of a base, as ``medvec.bases.verify`` does (the
    registry under test runs no worker); the base's new status."""
    with Session(engine) as session, session.begin():
        status = verify_base(session, store, base_id)
    assert status is not None
    return status.value


@dataclass
class Hospital:
    id: str
    name: str
    token: str
    token_id: str


def make_hospital(registry: Registry, prefix: str = "hospital") -> Hospital:
    name = f"{prefix}-{secrets.token_hex(4)}"
    with registry.admin() as admin:
        created = admin.post("/hospitals", json={"name": name})
        assert created.status_code == 201, created.text
        hospital_id = created.json()["id"]
        token = admin.post(
            "/tokens",
            json={"name": f"{name}-token", "role": "hospital", "hospital_id": hospital_id},
        )
        assert token.status_code == 201, token.text
    return Hospital(hospital_id, name, token.json()["token"], token.json()["id"])


@pytest.fixture()
def hospital(registry: Registry) -> Hospital:
    return make_hospital(registry)


@pytest.fixture()
def other_hospital(registry: Registry) -> Hospital:
    return make_hospital(registry, "other")


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    """Headless Chromium for a module of console tests."""
    driver = chromium()
    yield driver
    driver.quit()


@pytest.fixture()
def signed_out(browser: webdriver.Chrome) -> None:
    """No console session left over from the module's previous test (``usefixtures``)."""
    browser.delete_all_cookies()


@pytest.fixture()
def outlier_scale(registry: Registry, kit: ModelKit, base: dict[str, Any]) -> float:
    """A scale that puts a vector far beyond 3x the median norm of as many screened peers
    as the norm rule needs, yet under the upload norm bound."""
    from tests.api.screening import push_scaled, screen

    peers = [
        push_scaled(registry, kit, make_hospital(registry, "peer"), 1.0 + 0.05 * i)
        for i in range(registry.settings.screening_min_peers)
    ]
    for vector in peers:
        assert screen(registry, vector["id"])["status"] == "validated"
    norm = float(peers[0]["norm"])
    scale = min(40.0, 0.9 * registry.settings.max_vector_norm / norm)  # type: ignore[operator]
    assert scale > 10, "the kit's vector is too large to test the norm rule here"
    return scale
