"""Versions: hospitals see production only, promotion needs a completed evaluation
(force overrides and is audited), rollback, and new generations."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from app.models import (
    Benchmark,
    Evaluation,
    EvaluationStatus,
    ModelVersion,
    VersionInput,
    VersionStatus,
)
from medvec.hashing import sha256_file
from medvec.models import load_model_file, save_model_file
from tests.api.conftest import Hospital, Registry, make_hospital
from tests.api.factories import SPEC, ModelKit
from tests.api.helpers import error, push


@pytest.fixture(autouse=True)
def no_production(registry: Registry) -> None:
    """Each test starts without a production version (archive what an earlier one left)."""
    with registry.engine.begin() as connection:
        connection.execute(
            update(ModelVersion)
            .where(ModelVersion.status == VersionStatus.PRODUCTION)
            .values(status=VersionStatus.ARCHIVED, rolled_back_at=ModelVersion.created_at)
        )


def make_version(
    registry: Registry,
    kit: ModelKit,
    base: dict[str, Any],
    inputs: dict[str, float] | None = None,
) -> dict[str, Any]:
    """What a merge leaves behind: a model file in the store, a candidate row, lineage."""
    model, _ = load_model_file(kit.tuned_path)
    staged = registry.store.staging_path()
    save_model_file(staged, model, SPEC, {"version": secrets.token_hex(8)})
    digest = sha256_file(staged)
    info = registry.store.commit(staged, digest)
    with registry.session() as session, session.begin():
        version = ModelVersion(
            base_id=base["id"],
            strategy="weighted_mean",
            params={},
            sha256=digest,
            size=info.size,
            status=VersionStatus.CANDIDATE,
        )
        session.add(version)
        session.flush()
        for vector_id, weight in (inputs or {}).items():
            session.add(VersionInput(version_id=version.id, vector_id=vector_id, weight=weight))
    return {"id": version.id, "sha256": digest}


def evaluate(
    registry: Registry,
    version_id: str,
    status: EvaluationStatus,
    benchmark_id: str | None = None,
) -> str:
    """A stored evaluation of ``version_id`` (on a new benchmark unless one is named);
    the benchmark's id."""
    if benchmark_id is None:
        digest, size = registry.stored_blob()
    with registry.session() as session, session.begin():
        if benchmark_id is None:
            benchmark = Benchmark(
                name=f"b-{secrets.token_hex(4)}",
                sha256=digest,
                size=size,
                num_classes=2,
                sizes={"test": 1},
                image_shape=[28, 28],
                info={},
            )
            session.add(benchmark)
            session.flush()
            benchmark_id = benchmark.id
        session.add(
            Evaluation(
                version_id=version_id,
                benchmark_id=benchmark_id,
                split="test",
                metrics={"accuracy": 0.9},
                status=status,
            )
        )
    return benchmark_id


def _promote(client: Any, version_id: str, stage: str, force: bool = False) -> Any:
    return client.post(f"/versions/{version_id}/promote", json={"stage": stage, "force": force})


def test_production_needs_a_completed_evaluation(
    registry: Registry, base: dict[str, Any], kit: ModelKit
) -> None:
    version = make_version(registry, kit, base)
    evaluate(registry, version["id"], EvaluationStatus.FAILED)
    with registry.admin() as admin:
        refused = _promote(admin, version["id"], "production")
        assert refused.status_code == 409
        assert "no completed evaluation" in error(refused)["message"]
        assert admin.get(f"/versions/{version['id']}").json()["status"] == "candidate"
        evaluate(registry, version["id"], EvaluationStatus.COMPLETED)
        promoted = _promote(admin, version["id"], "production")
        assert promoted.status_code == 200, promoted.text
        assert promoted.json()["status"] == "production"
        assert promoted.json()["production_at"] is not None


def test_force_promotion_is_audited(
    registry: Registry, base: dict[str, Any], kit: ModelKit
) -> None:
    version = make_version(registry, kit, base)
    with registry.admin() as admin:
        assert _promote(admin, version["id"], "staging").json()["status"] == "staging"
        forced = _promote(admin, version["id"], "production", force=True)
        assert forced.status_code == 200
        events = admin.get("/audit", params={"target_id": version["id"]}).json()
    promotions = [e["payload"] for e in events if e["action"] == "version.promoted"]
    assert {"stage": "production", "previous": "staging", "force": True, "forced": True} in (
        promotions
    )


def test_hospitals_see_only_production(
    registry: Registry, base: dict[str, Any], kit: ModelKit, hospital: Hospital, tmp_path: Path
) -> None:
    candidate = make_version(registry, kit, base)
    live = make_version(registry, kit, base)
    with registry.client(hospital.token) as client:
        missing = client.get("/versions/production")
        assert missing.status_code == 404
        assert "no version is in production" in error(missing)["message"]
        with registry.admin() as admin:
            assert _promote(admin, live["id"], "production", force=True).status_code == 200
        production = client.get("/versions/production").json()
        assert production["id"] == live["id"]
        assert production["inputs"] == []
        download = client.get("/versions/production/download")
        assert client.get(f"/versions/{live['id']}").status_code == 200
        assert client.get(f"/versions/{candidate['id']}").status_code == 404
        assert client.get(f"/versions/{candidate['id']}/download").status_code == 404
        assert client.get("/versions").status_code == 403
        assert _promote(client, candidate["id"], "production", force=True).status_code == 403
    target = tmp_path / "prod.safetensors"
    target.write_bytes(download.content)
    assert sha256_file(target) == live["sha256"] == download.headers["X-Content-SHA256"]


def test_rollback_restores_the_previous_production(
    registry: Registry, base: dict[str, Any], kit: ModelKit
) -> None:
    first, second, third = (make_version(registry, kit, base) for _ in range(3))
    with registry.admin() as admin:
        for version in (first, second, third):
            assert _promote(admin, version["id"], "production", force=True).status_code == 200
        assert admin.get(f"/versions/{second['id']}").json()["status"] == "archived"
        restored = admin.post("/versions/rollback")
        assert restored.status_code == 200
        assert restored.json()["id"] == second["id"]
        assert admin.get(f"/versions/{third['id']}").json()["status"] == "archived"
        again = admin.post("/versions/rollback").json()
        assert again["id"] == first["id"]
        assert admin.get("/versions/production").json()["id"] == first["id"]
        assert admin.post("/versions/rollback").status_code == 409
        listed = admin.get("/versions", params={"status": "production"}).json()
        assert [v["id"] for v in listed] == [first["id"]]
        events = admin.get("/audit", params={"action": "version.rolled_back"}).json()
    assert {e["target_id"] for e in events} >= {third["id"], second["id"]}


def test_new_generation_becomes_the_current_base(
    registry: Registry, base: dict[str, Any], kit: ModelKit, hospital: Hospital
) -> None:
    version = make_version(registry, kit, base)
    with registry.admin() as admin:
        started = admin.post(f"/versions/{version['id']}/generation")
        assert started.status_code == 201, started.text
        new_base = started.json()
        assert new_base["sha256"] == version["sha256"]
        assert new_base["source_version_id"] == version["id"]
        assert new_base["generation"] >= 1
        assert admin.post(f"/versions/{version['id']}/generation").status_code == 409
    with registry.client(hospital.token) as client:
        assert client.get("/bases/current").json()["id"] == new_base["id"]
        assert client.get(f"/bases/{base['id']}").json()["sha256"] == base["sha256"]
        old = client.get(f"/bases/{base['id']}/download")
        assert old.headers["X-Content-SHA256"] == base["sha256"]
        fresh = client.get("/bases/current/download")
        assert fresh.headers["X-Content-SHA256"] == version["sha256"]


def test_unknown_stage_is_refused(registry: Registry, base: dict[str, Any], kit: ModelKit) -> None:
    version = make_version(registry, kit, base)
    with registry.admin() as admin:
        response = admin.post(f"/versions/{version['id']}/promote", json={"stage": "archived"})
    assert response.status_code == 422
    assert error(response)["code"] == "invalid_request"


def test_hospitals_see_only_their_own_lineage(
    registry: Registry, base: dict[str, Any], kit: ModelKit, hospital: Hospital
) -> None:
    other = make_hospital(registry, "other")
    ids = {}
    for who in (hospital, other):
        with registry.client(who.token) as client:
            ids[who.name] = push(client, kit.vector(who.name)).json()["id"]
    weights = {ids[hospital.name]: 0.25, ids[other.name]: 0.75}
    version = make_version(registry, kit, base, inputs=weights)
    with registry.admin() as admin:
        assert _promote(admin, version["id"], "production", force=True).status_code == 200
        lineage = admin.get(f"/versions/{version['id']}").json()["inputs"]
    assert {i["vector_id"]: i["weight"] for i in lineage} == weights
    with registry.client(hospital.token) as client:
        mine = client.get("/versions/production").json()["inputs"]
    assert mine == [{"vector_id": ids[hospital.name], "weight": 0.25}]
