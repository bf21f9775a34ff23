"""The promotion gate on the live registry (SQLite and PostgreSQL): a candidate worse than
production on the same benchmark split is refused with every check in ``detail``, nothing
changes, and ``force`` promotes it with the gate's verdict in the audit log. The default
gate compares overall metrics only; the per-class rule is on where an admin sets
``MEDVEC_GATE_CLASS_METRICS``."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import delete, update
from sqlalchemy.orm import sessionmaker

from app.config import AutoGeneration, Settings
from app.models import (
    BaseModelRecord,
    Benchmark,
    Evaluation,
    EvaluationStatus,
    ModelVersion,
    VersionStatus,
)
from tests.api.conftest import Registry
from tests.api.factories import ModelKit
from tests.api.helpers import error
from tests.api.test_versions import make_version, no_production  # noqa: F401  (fixture)
from worker.promotion import auto_promote

pytestmark = pytest.mark.databases  # SQLite and PostgreSQL


@pytest.fixture(autouse=True)
def out_of_the_rollback_chain(registry: Registry) -> Iterator[None]:
    """Versions promoted here leave the rollback history as they found it."""
    yield
    with registry.engine.begin() as connection:
        connection.execute(
            update(ModelVersion)
            .where(ModelVersion.production_at.is_not(None), ModelVersion.rolled_back_at.is_(None))
            .values(status=VersionStatus.ARCHIVED, rolled_back_at=ModelVersion.created_at)
        )


@pytest.fixture()
def per_class_gate(registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    """The registry's gate with the per-class sensitivity rule, as with
    ``MEDVEC_GATE_CLASS_METRICS='["sensitivity"]'`` (the server reads its settings object
    on every request)."""
    monkeypatch.setattr(registry.settings, "gate_class_metrics", ["sensitivity"])


GOOD = {"accuracy": 0.82, "balanced_accuracy": 0.80, "auc_macro": 0.90, "sensitivity": [0.9, 0.7]}


def _benchmark(registry: Registry) -> str:
    digest, size = registry.stored_blob()
    with registry.session() as session, session.begin():
        benchmark = Benchmark(
            name=f"gate-{secrets.token_hex(4)}", sha256=digest, size=size, num_classes=2,
            sizes={"val": 1, "test": 1}, image_shape=[28, 28], info={},
        )  # fmt: skip
        session.add(benchmark)
        session.flush()
        return benchmark.id


def _evaluated(registry: Registry, version_id: str, benchmark_id: str, **metrics: Any) -> None:
    with registry.session() as session, session.begin():
        session.add(
            Evaluation(
                version_id=version_id,
                benchmark_id=benchmark_id,
                split="val",
                metrics={**GOOD, **metrics},
                status=EvaluationStatus.COMPLETED,
            )  # fmt: skip
        )


def _promote(admin: Any, version_id: str, force: bool = False) -> Any:
    body = {"stage": "production", "force": force}
    return admin.post(f"/versions/{version_id}/promote", json=body)


def test_a_worse_candidate_is_refused_per_metric_and_force_is_audited(
    registry: Registry, kit: ModelKit, base: dict[str, Any], per_class_gate: None
) -> None:
    benchmark = _benchmark(registry)
    live, worse = make_version(registry, kit, base), make_version(registry, kit, base)
    _evaluated(registry, live["id"], benchmark)
    _evaluated(registry, worse["id"], benchmark, accuracy=0.80, sensitivity=[0.95, 0.6])
    with registry.admin() as admin:
        assert _promote(admin, live["id"]).status_code == 200
        refused = _promote(admin, worse["id"])
        assert refused.status_code == 409
        body = error(refused)
        assert body["code"] == "gate_failed"
        assert "accuracy 0.8000 < 0.8200 (production 0.8200)" in body["message"]
        assert "sensitivity[1] 0.6000 < 0.6500" in body["message"]
        detail = body["detail"]
        assert detail["benchmark_id"] == benchmark and detail["split"] == "val"
        assert detail["production_id"] == live["id"] and detail["passed"] is False
        failed = {(c["metric"], c["class_index"]) for c in detail["checks"] if not c["passed"]}
        assert failed == {("accuracy", None), ("sensitivity", 1)}
        passed = {(c["metric"], c["class_index"]) for c in detail["checks"] if c["passed"]}
        assert {("balanced_accuracy", None), ("auc_macro", None), ("sensitivity", 0)} <= passed
        # nothing changed
        assert admin.get(f"/versions/{live['id']}").json()["status"] == "production"
        assert admin.get(f"/versions/{worse['id']}").json()["status"] == "candidate"
        forced = _promote(admin, worse["id"], force=True)
        assert forced.status_code == 200 and forced.json()["status"] == "production"
        events = admin.get("/audit", params={"target_id": worse["id"]}).json()
    (promotion,) = [e["payload"] for e in events if e["action"] == "version.promoted"]
    assert promotion["force"] is True and promotion["forced"] is True
    assert promotion["gate"]["passed"] is False and promotion["gate"]["production_id"] == live["id"]


def test_within_tolerance_passes_and_an_incomparable_candidate_is_refused(
    registry: Registry, kit: ModelKit, base: dict[str, Any], per_class_gate: None
) -> None:
    benchmark, elsewhere = _benchmark(registry), _benchmark(registry)
    live, close, apart = (make_version(registry, kit, base) for _ in range(3))
    _evaluated(registry, live["id"], benchmark)
    # per-class sensitivity may drop by the class tolerance (0.05), overall metrics not at all
    _evaluated(registry, close["id"], benchmark, accuracy=0.83, sensitivity=[0.86, 0.7])
    _evaluated(registry, apart["id"], elsewhere, accuracy=0.99)
    with registry.admin() as admin:
        assert _promote(admin, live["id"]).status_code == 200
        refused = _promote(admin, apart["id"])
        assert refused.status_code == 409
        assert error(refused)["code"] == "precondition_failed"
        assert "no completed evaluation on a common benchmark split" in error(refused)["message"]
        promoted = _promote(admin, close["id"])
        assert promoted.status_code == 200, promoted.text
        events = admin.get("/audit", params={"target_id": close["id"]}).json()
    (promotion,) = [e["payload"] for e in events if e["action"] == "version.promoted"]
    assert promotion["forced"] is False and promotion["gate"]["passed"] is True


def test_the_default_gate_lets_a_class_drop_when_no_overall_metric_does(
    registry: Registry, kit: ModelKit, base: dict[str, Any]
) -> None:
    """Without MEDVEC_GATE_CLASS_METRICS a candidate no worse overall is promoted although
    one class's sensitivity fell by 0.3; it is still refused when an overall metric drops."""
    assert registry.settings.gate_class_metrics == []
    benchmark = _benchmark(registry)
    live, shifted, worse = (make_version(registry, kit, base) for _ in range(3))
    _evaluated(registry, live["id"], benchmark)
    _evaluated(registry, shifted["id"], benchmark, sensitivity=[0.6, 0.95])
    _evaluated(registry, worse["id"], benchmark, balanced_accuracy=0.75)
    with registry.admin() as admin:
        assert _promote(admin, live["id"]).status_code == 200
        refused = _promote(admin, worse["id"])
        assert refused.status_code == 409 and error(refused)["code"] == "gate_failed"
        checks = error(refused)["detail"]["checks"]
        assert [(c["metric"], c["passed"]) for c in checks] == [
            ("accuracy", True),
            ("balanced_accuracy", False),
            ("auc_macro", True),
        ]
        promoted = _promote(admin, shifted["id"])
        assert promoted.status_code == 200, promoted.text
        events = admin.get("/audit", params={"target_id": shifted["id"]}).json()
    (promotion,) = [e["payload"] for e in events if e["action"] == "version.promoted"]
    assert promotion["forced"] is False and promotion["gate"]["passed"] is True
    assert all(c["class_index"] is None for c in promotion["gate"]["checks"])


@pytest.mark.parametrize("generation", list(AutoGeneration))
def test_auto_promotion_starts_a_generation_only_where_promotions_start_them(
    registry: Registry, kit: ModelKit, base: dict[str, Any], generation: AutoGeneration
) -> None:
    """With ``MEDVEC_AUTO_GENERATION=promoted`` (``true`` before) a version the
    auto-promotion policy promotes becomes, in the same transaction, the base of a new
    generation, audited as the system actor. With ``merged`` (the default) the merge
    started it already, and with ``off`` an admin does: production moves, the current
    base stays."""
    assert Settings.model_fields["auto_generation"].default is AutoGeneration.MERGED
    settings = registry.settings.model_copy(
        update={"auto_promote": True, "auto_generation": generation}
    )
    benchmark = _benchmark(registry)
    version = make_version(registry, kit, base)
    _evaluated(registry, version["id"], benchmark)
    with registry.admin() as admin:
        before = admin.get("/bases/current").json()
    try:
        assert auto_promote(sessionmaker(registry.engine), version["id"], settings)
        with registry.admin() as admin:
            assert admin.get(f"/versions/{version['id']}").json()["status"] == "production"
            current = admin.get("/bases/current").json()
            events = admin.get("/audit", params={"target_id": current["id"]}).json()
        if generation is not AutoGeneration.PROMOTED:
            assert current["id"] == before["id"]
            return
        assert current["source_version_id"] == version["id"]
        assert current["sha256"] == version["sha256"] and current["parent_id"] == base["id"]
        assert current["generation"] > before["generation"]
        (started,) = [e for e in events if e["action"] == "base.generation_started"]
        assert started["actor"] == "system:auto-promote"
    finally:  # the session's other tests keep their current base
        _forget_generations_of(registry, [version["id"]])


def test_a_promoted_version_of_a_replaced_base_starts_no_generation(
    registry: Registry, kit: ModelKit, base: dict[str, Any]
) -> None:
    """Two candidates of one base, promoted one after the other: the first starts the next
    generation; the second, made from a base that is no longer current, moves production
    but starts none. Its generation would fork the lineage away from every vector pushed
    against the first one's (a bug: it started one)."""
    settings = registry.settings.model_copy(
        update={"auto_promote": True, "auto_generation": AutoGeneration.PROMOTED}
    )
    benchmark = _benchmark(registry)
    first, second = make_version(registry, kit, base), make_version(registry, kit, base)
    _evaluated(registry, first["id"], benchmark)
    _evaluated(registry, second["id"], benchmark, accuracy=0.9)
    sessions = sessionmaker(registry.engine)
    try:
        assert auto_promote(sessions, first["id"], settings)
        with registry.admin() as admin:
            after_first = admin.get("/bases/current").json()
        assert after_first["source_version_id"] == first["id"]
        assert auto_promote(sessions, second["id"], settings)
        with registry.admin() as admin:
            assert admin.get(f"/versions/{second['id']}").json()["status"] == "production"
            assert admin.get("/bases/current").json()["id"] == after_first["id"]
    finally:
        _forget_generations_of(registry, [first["id"], second["id"]])


def _forget_generations_of(registry: Registry, version_ids: list[str]) -> None:
    with registry.engine.begin() as connection:
        connection.execute(
            delete(BaseModelRecord).where(BaseModelRecord.source_version_id.in_(version_ids))
        )
