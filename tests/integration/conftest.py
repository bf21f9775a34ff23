"""The integration world: PostgreSQL (fresh database, migrated by Alembic), Redis (a free
database index), a real ``celery worker`` process, and the registry app in-process
sending its jobs to that worker through Redis.

The worker runs with ``MEDVEC_MERGE_TENSOR_DELAY_S`` (a test-only setting: a sleep
after each merged tensor) so that a merge lasts a few seconds and can be killed
midway, and with a 120 s visibility timeout so that Redis hands a killed worker's
task to the next worker within the test's patience.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.db import make_engine
from app.main import create_app
from app.schema import upgrade
from medvec.tokens import mint_token
from tests.integration import factories
from tests.integration.services import fresh_postgres_database, fresh_redis_database
from tests.scratch import scratch_dir
from tests.servers import WorkerProcess
from worker.celery_app import MedVecCelery, make_celery
from worker.config import WorkerSettings
from worker.queue import CeleryJobQueue

HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark what this world's fixtures need (pytest ignores ``pytestmark`` in a conftest):
    a test of this folder on ``settings`` needs PostgreSQL and Redis, and one with the
    ``worker`` process is slow. Tests that start services of their own mark themselves."""
    for item in items:
        if HERE not in item.path.parents:
            continue
        names = getattr(item, "fixturenames", ())
        if "settings" in names:
            item.add_marker(pytest.mark.postgres)
            item.add_marker(pytest.mark.redis)
        if "worker" in names:
            item.add_marker(pytest.mark.slow)


API = "/api/v1"


def _worker_env(settings: WorkerSettings, extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDVEC_")}
    env.update(
        {
            "MEDVEC_ENVIRONMENT": "test",
            "MEDVEC_DATA_DIR": str(settings.data_dir),
            "MEDVEC_DATABASE_URL": str(settings.database_url),
            "MEDVEC_REDIS_URL": str(settings.redis_url),
            "MEDVEC_QUEUE": settings.queue,
            "MEDVEC_VISIBILITY_TIMEOUT_S": str(settings.visibility_timeout_s),
            "MEDVEC_MERGE_TIME_LIMIT_S": str(settings.merge_time_limit_s),
            "MEDVEC_MERGE_SOFT_TIME_LIMIT_S": str(settings.merge_soft_time_limit_s),
            "MEDVEC_EVAL_TIME_LIMIT_S": str(settings.eval_time_limit_s),
            "MEDVEC_EVAL_SOFT_TIME_LIMIT_S": str(settings.eval_soft_time_limit_s),
            "MEDVEC_TUNE_TIME_LIMIT_S": str(settings.tune_time_limit_s),
            "MEDVEC_TUNE_SOFT_TIME_LIMIT_S": str(settings.tune_soft_time_limit_s),
            "MEDVEC_RETRY_BACKOFF_S": "1",
            # these worlds' vectors are a few SGD steps from a random base, or seeded
            # noise: screening would rightly quarantine them (tests/e2e/test_screening.py)
            "MEDVEC_SCREENING_ENABLED": "false",
            # tests make the versions they judge; the session's worker turns the policy on
            "MEDVEC_AUTO_MERGE": "false",
            **extra,
        }
    )
    return env


def integration_settings(
    data_dir: Path, database_url: str, redis_url: str, **extra: Any
) -> WorkerSettings:
    """A registry's and its workers' settings for these tests: their own queue, and time
    limits that end a stuck job well within a test's patience."""
    return WorkerSettings(
        environment="test",
        data_dir=data_dir,
        database_url=database_url,
        redis_url=redis_url,
        queue=extra.pop("queue", f"medvec-it-{secrets.token_hex(4)}"),
        visibility_timeout_s=120,
        merge_time_limit_s=60,
        merge_soft_time_limit_s=55,
        eval_time_limit_s=100,
        eval_soft_time_limit_s=90,
        tune_time_limit_s=110,
        tune_soft_time_limit_s=100,
        bootstrap_admin_token=mint_token(),
        **{"auto_merge": False, **extra},
    )


@pytest.fixture(scope="session")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerSettings]:
    with (
        fresh_postgres_database() as database_url,
        fresh_redis_database() as redis_url,
        scratch_dir(tmp_path_factory, "registry") as data_dir,
    ):
        yield integration_settings(data_dir, database_url, redis_url)


@pytest.fixture(scope="session")
def celery(settings: WorkerSettings) -> Iterator[MedVecCelery]:
    """The test's own Celery app: sends tasks and reads results, runs nothing."""
    app = make_celery(settings)
    yield app
    app.close()


@pytest.fixture(scope="session")
def worker(
    settings: WorkerSettings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    engine = make_engine(str(settings.database_url))
    upgrade(engine)
    engine.dispose()
    env = _worker_env(
        settings,
        {
            "MEDVEC_MERGE_TENSOR_DELAY_S": "0.04",
            "MEDVEC_AUTO_MERGE": "true",
            "MEDVEC_AUTO_MERGE_K": "4",
            # tests start the generations they judge: an auto-merged version starting
            # one would move the current base under every later test of the session
            "MEDVEC_AUTO_GENERATION": "off",
        },
    )
    process = WorkerProcess(env, tmp_path_factory.mktemp("worker-logs"), settings.queue)
    process.start()
    yield process
    process.stop()


@dataclass
class Registry:
    """The registry in-process, plus helpers that speak its HTTP API."""

    client: TestClient
    admin_token: str
    tmp: Path
    hospital_tokens: dict[str, str] = field(default_factory=dict)

    def headers(self, who: str = "admin") -> dict[str, str]:
        token = self.admin_token if who == "admin" else self.hospital_tokens[who]
        return {"Authorization": f"Bearer {token}"}

    def call(self, method: str, path: str, who: str = "admin", **kwargs: Any) -> Any:
        response = self.client.request(method, f"{API}{path}", headers=self.headers(who), **kwargs)
        assert response.status_code < 400, (
            f"{method} {path}: {response.status_code} {response.text}"
        )
        return response.json()

    def hospital(self, name: str) -> str:
        if name not in self.hospital_tokens:
            record = self.call("POST", "/hospitals", json={"name": name})
            body = {"name": f"{name}-token", "role": "hospital", "hospital_id": record["id"]}
            self.hospital_tokens[name] = self.call("POST", "/tokens", json=body)["token"]
        return name

    def upload(self, path: str, file: Path, who: str = "admin", **params: Any) -> Any:
        headers = {**self.headers(who), "Content-Type": "application/octet-stream"}
        response = self.client.post(
            f"{API}{path}", content=file.read_bytes(), headers=headers, params=params
        )
        assert response.status_code in (200, 201), response.text
        return response.json()

    def register_base(self, seed: int) -> dict[str, Any]:
        path = factories.make_base(self.tmp / f"base-{seed}.safetensors", seed)
        record = self.upload("/bases", path, name=f"base-{seed}")
        record = self.wait(f"/bases/{record['id']}", lambda b: b["status"] != "verifying")
        assert record["status"] == "ready", record
        return {**record, "path": path}

    def push(self, hospital: str, vector: Path) -> dict[str, Any]:
        return dict(self.upload("/vectors", vector, who=self.hospital(hospital)))

    def wait(
        self, path: str, done: Callable[[Any], bool], timeout: float = 240.0, poll: float = 0.5
    ) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            body = self.call("GET", path)
            if done(body):
                return body
            if time.monotonic() > deadline:
                raise AssertionError(f"GET {path} still {body} after {timeout} s")
            time.sleep(poll)


@pytest.fixture(scope="session")
def registry(
    settings: WorkerSettings,
    celery: MedVecCelery,
    worker: WorkerProcess,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Registry]:
    queue = CeleryJobQueue(celery, settings.queue)
    assert settings.bootstrap_admin_token is not None
    with (
        TestClient(create_app(settings, job_queue=queue)) as client,
        scratch_dir(tmp_path_factory, "files") as files,
    ):
        yield Registry(client, settings.bootstrap_admin_token.get_secret_value(), files)


@dataclass
class World:
    """A base with three hospitals' fine-tuned vectors and a registered benchmark."""

    base: dict[str, Any]
    vectors: list[dict[str, Any]]
    benchmark: dict[str, Any]
    benchmark_path: Path
    last_accepted_at: float


@pytest.fixture(scope="session")
def world(registry: Registry, datasets_dir: Path) -> World:
    base = registry.register_base(seed=1)
    bench_path = factories.make_benchmark(datasets_dir, registry.tmp / "blood-bench.npz")
    benchmark = registry.upload("/benchmarks", bench_path, name="blood-1000")
    vectors = push_hospitals(registry, base, datasets_dir, 3)
    return World(base, vectors, benchmark, bench_path, time.monotonic())


def push_hospitals(
    registry: Registry, base: dict[str, Any], datasets_dir: Path, count: int
) -> list[dict[str, Any]]:
    """``count`` hospitals, each fine-tuning ``base`` on its own real images and pushing
    the vector; the registry's answers."""
    vectors = []
    for index in range(count):
        name = registry.hospital(f"hospital-{index}")
        vector = factories.fine_tuned_vector(
            base["path"],
            registry.tmp / f"v-{index}.safetensors",
            base_id=base["id"],
            base_sha256=base["sha256"],
            hospital=name,
            data=factories.hospital_data(datasets_dir, index),
            seed=index,
        )
        vectors.append(registry.push(name, vector))
    return vectors
