"""Merge jobs on a queue of their own (``MEDVEC_MERGE_QUEUE``): a ``worker.merge_main``
worker writes the merged file without ever loading torch, and a default worker
recalibrates it, records the version and evaluates it. Real PostgreSQL, Redis, two
``celery worker`` processes, ResNet-18 vectors fine-tuned on BloodMNIST."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.db import make_engine
from app.main import create_app
from app.schema import upgrade
from tests.integration import factories
from tests.integration.conftest import (
    Registry,
    _worker_env,
    integration_settings,
    push_hospitals,
)
from tests.integration.services import fresh_postgres_database, fresh_redis_database
from tests.servers import WorkerProcess
from worker.celery_app import make_sender
from worker.config import WorkerSettings
from worker.queue import CeleryJobQueue, task_routes

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]


@pytest.fixture(scope="module")
def two_queue_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerSettings]:
    tag = secrets.token_hex(4)
    with fresh_postgres_database() as database_url, fresh_redis_database() as redis_url:
        yield integration_settings(
            tmp_path_factory.mktemp("two-queue-registry"),
            database_url,
            redis_url,
            queue=f"medvec-it-{tag}",
            merge_queue=f"medvec-it-merge-{tag}",
        )


@pytest.fixture(scope="module")
def workers(
    two_queue_settings: WorkerSettings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[WorkerProcess, WorkerProcess]]:
    settings = two_queue_settings
    assert settings.merge_queue is not None
    engine = make_engine(str(settings.database_url))
    upgrade(engine)
    engine.dispose()
    env = _worker_env(settings, {"MEDVEC_MERGE_QUEUE": settings.merge_queue})
    default = WorkerProcess(env, tmp_path_factory.mktemp("default-worker"), settings.queue)
    merger = WorkerProcess(
        env, tmp_path_factory.mktemp("merge-worker"), settings.merge_queue, "worker.merge_main"
    )
    default.start()
    try:
        merger.start()
        yield default, merger
        merger.stop()
    finally:
        default.stop()


@pytest.fixture(scope="module")
def two_queue_registry(
    two_queue_settings: WorkerSettings,
    workers: tuple[WorkerProcess, WorkerProcess],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Registry]:
    settings = two_queue_settings
    sender = make_sender(settings)
    queue = CeleryJobQueue(sender, settings.queue, task_routes(settings))
    assert settings.bootstrap_admin_token is not None
    with TestClient(create_app(settings, job_queue=queue)) as client:
        yield Registry(
            client,
            settings.bootstrap_admin_token.get_secret_value(),
            tmp_path_factory.mktemp("two-queue-files"),
        )
    sender.close()


def _process_tree(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [pid, *(p for child in children for p in _process_tree(int(child)))]


def _loads_torch(pid: int) -> bool:
    """Whether any process of ``pid``'s tree has torch's library mapped."""
    return any("libtorch" in Path(f"/proc/{p}/maps").read_text() for p in _process_tree(pid))


def test_merge_queue_worker_never_loads_torch_and_the_default_queue_finishes(
    two_queue_registry: Registry,
    workers: tuple[WorkerProcess, WorkerProcess],
    datasets_dir: Path,
) -> None:
    registry = two_queue_registry
    default, merger = workers
    base = registry.register_base(seed=1)
    bench_path = factories.make_benchmark(datasets_dir, registry.tmp / "blood-bench.npz")
    benchmark = registry.upload("/benchmarks", bench_path, name="blood-two-queues")
    push_hospitals(registry, base, datasets_dir, 2)

    body = {"base_id": base["id"], "strategy": "weighted_mean", "benchmark_id": benchmark["id"]}
    accepted = registry.call("POST", "/merges", json=body)
    job = registry.wait(
        f"/merges/{accepted['job_id']}", lambda j: j["status"] in ("succeeded", "failed")
    )
    assert job["status"] == "succeeded", job["error"]
    assert job["attempts"] == 1
    version = registry.call("GET", f"/versions/{job['version_id']}")
    assert version["calibration"] is not None  # recalibrated on the default queue
    assert version["mergeability"]["mean_cosine"] is not None  # measured by the merge worker
    rows = registry.wait(
        f"/versions/{version['id']}/evaluations",
        lambda rows: {r["split"] for r in rows if r["status"] == "completed"} >= {"test", "val"},
    )
    assert len(rows) == 2

    merge_log, default_log = merger.logs(), default.logs()
    assert "medvec.merge.run" in merge_log and "succeeded" in merge_log
    assert "medvec.merge.finish" not in merge_log
    assert "medvec.merge.finish" in default_log
    assert "medvec.merge.run[" not in default_log  # every merge ran on the merge queue
    assert not _loads_torch(merger.pid)
    assert _loads_torch(default.pid)  # the check sees torch where it is loaded
