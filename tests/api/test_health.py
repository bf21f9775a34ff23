"""Probes, the OpenAPI document and the one error body."""

from __future__ import annotations

import httpx

from tests.api.conftest import Registry
from tests.api.helpers import error


def test_healthz_and_readyz(registry: Registry) -> None:
    assert httpx.get(f"{registry.url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{registry.url}/readyz")
    assert ready.status_code == 200
    assert ready.json() == {"status": "ready", "database": "ok", "storage": "ok"}


def test_openapi_documents_errors_and_raw_bodies(registry: Registry) -> None:
    spec = httpx.get(f"{registry.url}/openapi.json").json()
    complete = spec["paths"]["/api/v1/uploads/{upload_id}/complete"]["post"]
    assert {"401", "403", "404", "409", "410", "422"} <= set(complete["responses"])
    assert complete["responses"]["422"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ErrorBody"
    }
    put = spec["paths"]["/api/v1/uploads/{upload_id}"]["put"]
    assert "application/octet-stream" in put["requestBody"]["content"]


def test_unknown_route_has_the_same_error_body(registry: Registry) -> None:
    with registry.admin() as admin:
        response = admin.get("/no-such-thing")
    assert response.status_code == 404
    assert error(response)["code"] == "http_404"
