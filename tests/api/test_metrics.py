"""``GET /metrics`` in one process (no multiprocess directory): uploads, rejections and
the gauges read from the database, as deltas around real requests."""

from __future__ import annotations

from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr
from sqlalchemy import func, select

from app.models import DataVector, VectorStatus
from tests.api.conftest import Hospital, Registry
from tests.api.factories import ModelKit
from tests.api.helpers import OCTET, error, push


def _scrape(registry: Registry) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    with registry.client() as client:
        response = client.get(registry.url + "/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def _value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_uploads_rejections_and_vector_states_are_counted(
    registry: Registry, base: dict[str, Any], kit: ModelKit, hospital: Hospital
) -> None:
    before = _scrape(registry)
    path = kit.vector(hospital.name)
    with registry.client(hospital.token) as client:
        accepted = push(client, path)
        assert accepted.status_code == 201, accepted.text
        again = push(client, path)  # the same bytes: no new upload
        assert again.status_code == 200
        refused = client.post("/vectors", content=b"\x00" * 64, headers=OCTET)
        assert refused.status_code == 422
        bad_session = client.post("/uploads", json={"sha256": "x", "size": 1})
        assert error(bad_session)["code"] == "invalid_request"
    code = error(refused)["code"]
    after = _scrape(registry)

    def delta(name: str, **labels: str) -> float:
        return _value(after, name, **labels) - _value(before, name, **labels)

    assert delta("medvec_uploads_total", kind="vector") == 1
    assert delta("medvec_upload_bytes_total", kind="vector") == path.stat().st_size
    assert delta("medvec_upload_rejections_total", code=code) == 1
    assert delta("medvec_upload_rejections_total", code="invalid_request") == 1
    with registry.session() as session:
        validated = session.scalar(
            select(func.count()).where(DataVector.status == VectorStatus.VALIDATED)
        )
    assert _value(after, "medvec_vectors", status="validated") == validated
    assert _value(after, "medvec_queue_depth", kind="merge") >= 0
    assert ("medvec_vectors", frozenset({("status", "superseded")})) in after


def test_reads_and_refused_requests_elsewhere_are_not_upload_rejections(
    registry: Registry, hospital: Hospital
) -> None:
    before = _scrape(registry)
    with registry.client(hospital.token) as client:
        assert client.get("/vectors/no-such-vector").status_code == 404
        assert client.post("/hospitals", json={"name": "x"}).status_code == 403
    after = _scrape(registry)

    def rejections(samples: dict[Any, float]) -> dict[Any, float]:
        return {k: v for k, v in samples.items() if k[0] == "medvec_upload_rejections_total"}

    assert rejections(after) == rejections(before)


def test_a_metrics_token_guards_the_endpoint(registry: Registry) -> None:
    from fastapi.testclient import TestClient

    from app.main import create_app

    settings = registry.settings.model_copy(update={"metrics_token": SecretStr("scrape-secret")})
    with TestClient(create_app(settings)) as client:
        denied = client.get("/metrics")
        assert denied.status_code == 401 and error(denied)["code"] == "unauthenticated"
        wrong = client.get("/metrics", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        allowed = client.get("/metrics", headers={"Authorization": "Bearer scrape-secret"})
        assert allowed.status_code == 200 and "medvec_vectors" in allowed.text
    off = registry.settings.model_copy(update={"metrics_enabled": False})
    with TestClient(create_app(off)) as client:
        assert client.get("/metrics").status_code == 404
