"""Evaluations hold a lease: one left ``running`` past it (its worker was killed) is sent
again by the sweeper and finished by a real worker, and gives up after the maximum
number of deliveries; admins can ask for an evaluation to be run again."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.db import make_engine, make_sessionmaker, utcnow
from app.models import Evaluation, EvaluationStatus
from tests.integration import factories
from tests.integration.conftest import Registry
from worker.celery_app import MedVecCelery
from worker.config import WorkerSettings
from worker.queue import CeleryJobQueue
from worker.session import session_scope
from worker.sweeper import sweep

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]

#: deliveries the test worker process makes of one task (its MEDVEC_MAX_ATTEMPTS default)
MAX_ATTEMPTS = WorkerSettings.model_fields["max_attempts"].default
TEST_IMAGES = 200


@pytest.fixture(scope="module")
def sessions(settings: WorkerSettings) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(str(settings.database_url))
    yield make_sessionmaker(engine)
    engine.dispose()


def _settled(rows: list[dict[str, Any]]) -> bool:
    return bool(rows) and all(r["status"] in ("completed", "failed") for r in rows)


@dataclass
class Lab:
    """A base of its own with two hospitals' vectors (seeded noise: no training), a small
    benchmark, and a merged version whose test and val evaluations have completed."""

    benchmark: dict[str, Any]
    version: dict[str, Any]


@pytest.fixture(scope="module")
def lab(registry: Registry, datasets_dir: Path) -> Lab:
    base = registry.register_base(seed=11)
    bench_path = factories.make_benchmark(
        datasets_dir, registry.tmp / "lease-bench.npz", n_test=TEST_IMAGES, n_val=100
    )
    benchmark = registry.upload("/benchmarks", bench_path, name="blood-leases")
    vectors = []
    for index in range(2):
        name = registry.hospital(f"lease-{index}")
        vector = factories.perturbed_vector(
            base["path"],
            registry.tmp / f"lease-{index}.safetensors",
            base_id=base["id"],
            base_sha256=base["sha256"],
            hospital=name,
            seed=index,
        )
        vectors.append(registry.push(name, vector))
    body = {
        "base_id": base["id"],
        "strategy": "weighted_mean",
        "benchmark_id": benchmark["id"],
        "selection": {"vector_ids": [v["id"] for v in vectors]},
    }
    job_id = registry.call("POST", "/merges", json=body)["job_id"]
    job = registry.wait(f"/merges/{job_id}", lambda j: j["status"] in ("succeeded", "failed"))
    assert job["status"] == "succeeded", job["error"]
    rows = registry.wait(f"/versions/{job['version_id']}/evaluations", _settled)
    assert {r["split"]: r["status"] for r in rows} == {"test": "completed", "val": "completed"}
    return Lab(benchmark, dict(registry.call("GET", f"/versions/{job['version_id']}")))


@pytest.fixture()
def version(lab: Lab) -> dict[str, Any]:
    return lab.version


def _leave_running(
    sessions: sessionmaker[Session], version_id: str, split: str, *, lease: timedelta, attempts: int
) -> str:
    """What a worker killed mid-evaluation leaves: the row ``running``, its lease ``lease``
    from now (negative: expired), its metrics not written."""
    with session_scope(sessions) as session:
        row = session.scalars(
            select(Evaluation).where(Evaluation.version_id == version_id, Evaluation.split == split)
        ).one()
        row.status, row.metrics, row.attempts = EvaluationStatus.RUNNING, {}, attempts
        row.lease_expires_at = utcnow() + lease
        row.updated_at = utcnow() - timedelta(hours=1)
        return row.id


def _sweep(
    sessions: sessionmaker[Session], settings: WorkerSettings, celery: MedVecCelery
) -> list[str]:
    with session_scope(sessions, CeleryJobQueue(celery, settings.queue)) as session:
        return sweep(session, settings)


def _by_split(registry: Registry, version_id: str) -> dict[str, dict[str, Any]]:
    return {r["split"]: r for r in registry.call("GET", f"/versions/{version_id}/evaluations")}


def test_an_evaluation_running_past_its_lease_is_sent_again_and_finishes(
    registry: Registry,
    version: dict[str, Any],
    sessions: sessionmaker[Session],
    settings: WorkerSettings,
    celery: MedVecCelery,
) -> None:
    before = _by_split(registry, version["id"])
    dead = _leave_running(sessions, version["id"], "test", lease=-timedelta(minutes=1), attempts=1)
    alive = _leave_running(sessions, version["id"], "val", lease=timedelta(hours=1), attempts=1)

    resent = _sweep(sessions, settings, celery)
    assert dead in resent and alive not in resent

    path = f"/versions/{version['id']}/evaluations"
    rows = registry.wait(path, lambda rows: any(r["status"] == "completed" for r in rows))
    test = next(r for r in rows if r["split"] == "test")
    assert test["status"] == "completed", test["error"]
    assert test["attempts"] == 2  # the killed delivery and this one
    assert test["metrics"]["accuracy"] == before["test"]["metrics"]["accuracy"]
    val = next(r for r in rows if r["split"] == "val")
    assert val["status"] == "running"  # its lease holds: its worker may still be at it
    with session_scope(sessions) as session:
        row = session.get(Evaluation, alive)
        assert row is not None
        row.status, row.metrics = EvaluationStatus.COMPLETED, before["val"]["metrics"]


def test_an_evaluation_killed_on_every_delivery_ends_failed(
    registry: Registry,
    version: dict[str, Any],
    sessions: sessionmaker[Session],
    settings: WorkerSettings,
    celery: MedVecCelery,
) -> None:
    dead = _leave_running(
        sessions, version["id"], "test", lease=-timedelta(minutes=1), attempts=MAX_ATTEMPTS
    )
    assert dead in _sweep(sessions, settings, celery)

    path = f"/versions/{version['id']}/evaluations"
    rows = registry.wait(path, _settled)
    test = next(r for r in rows if r["split"] == "test")
    assert test["status"] == "failed" and test["attempts"] == MAX_ATTEMPTS + 1
    assert f"gave up after {MAX_ATTEMPTS} deliveries" in test["error"]
    assert dead not in _sweep(sessions, settings, celery)  # failed is final for the sweeper


def test_admin_runs_an_evaluation_again(
    registry: Registry, version: dict[str, Any], lab: Lab
) -> None:
    path = f"/versions/{version['id']}/evaluations"
    body = {"benchmark_id": lab.benchmark["id"], "split": "test"}
    accepted = registry.client.post(f"/api/v1{path}", json=body, headers=registry.headers())
    assert accepted.status_code == 202, accepted.text
    assert accepted.json()["status"] == "queued" and accepted.json()["attempts"] == 0
    assert accepted.headers["location"] == f"/api/v1{path}"

    rows = registry.wait(path, _settled)
    test = next(r for r in rows if r["split"] == "test")
    assert test["status"] == "completed" and test["attempts"] == 1, test["error"]
    assert test["metrics"]["n"] == TEST_IMAGES
    assert len(rows) == 2  # the same row, run again: no second one
    events = registry.call("GET", "/audit", params={"action": "evaluation.requested"})
    assert any(e["target_id"] == test["id"] for e in events)


def test_asking_to_evaluate_is_checked_before_anything_is_queued(
    registry: Registry, version: dict[str, Any], lab: Lab
) -> None:
    path = f"/api/v1/versions/{version['id']}/evaluations"
    bench = lab.benchmark["id"]
    cases = [
        ("admin", path, {"benchmark_id": "no-such-benchmark"}, 404, "not_found"),
        ("admin", path, {"benchmark_id": bench, "split": "train"}, 422, "invalid_input"),
        ("admin", path, {"benchmark_id": bench, "split": "nope"}, 422, "invalid_request"),
        ("admin", "/api/v1/versions/nope/evaluations", {"benchmark_id": bench}, 404, "not_found"),
        (registry.hospital("hospital-0"), path, {"benchmark_id": bench}, 403, "forbidden"),
    ]
    before = _by_split(registry, version["id"])
    for who, url, body, status, code in cases:
        response = registry.client.post(url, json=body, headers=registry.headers(who))
        assert response.status_code == status, (body, response.text)
        assert response.json()["code"] == code, response.text
    assert _by_split(registry, version["id"]) == before
