"""Defects the schemathesis run (tests/fuzz) found: answers the OpenAPI document did not
describe, and requests it called valid that the registry refused; and requests it calls
invalid that the registry took (a number for a boolean, a string for a number, an empty
id for no id)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.api.conftest import Hospital, Registry
from tests.api.helpers import error


def _openapi(registry: Registry) -> dict[str, Any]:
    return dict(httpx.get(f"{registry.url}/openapi.json", timeout=30).json())


def _allow(response: httpx.Response) -> set[str]:
    return {m.strip() for m in response.headers["Allow"].split(",")}


def test_a_literal_path_allows_only_its_own_methods(registry: Registry) -> None:
    # GET /versions/{version_id} matches "rollback" as an id, but only answers 404 there
    with registry.admin() as admin:
        rollback = admin.options("/versions/rollback")
        wrong = admin.delete("/versions/rollback")
        version = admin.options("/versions/some-version-id")
    assert rollback.status_code == 204
    assert _allow(rollback) == {"POST", "OPTIONS"}
    assert wrong.status_code == 405 and _allow(wrong) == {"POST", "OPTIONS"}
    assert _allow(version) == {"GET", "OPTIONS"}


def test_an_admin_token_with_an_empty_hospital_id_is_422_not_409(registry: Registry) -> None:
    before = registry.snapshot()
    with registry.admin() as admin:
        admin_token = admin.post("/tokens", json={"name": "x", "role": "admin", "hospital_id": ""})
        hospital_token = admin.post(
            "/tokens", json={"name": "x", "role": "hospital", "hospital_id": ""}
        )
    for response in (admin_token, hospital_token):
        assert response.status_code == 422, response.text
        assert error(response)["code"] == "invalid_request"
    assert registry.snapshot() == before


def test_the_schema_says_which_metrics_rank(registry: Registry) -> None:
    parameters = _openapi(registry)["paths"]["/api/v1/leaderboard"]["get"]["parameters"]
    metric = next(p for p in parameters if p["name"] == "metric")
    assert set(metric["schema"]["enum"]) == {
        "accuracy",
        "balanced_accuracy",
        "auc_macro",
        "f1_macro",
        "ece",
    }
    with registry.admin() as admin:
        response = admin.get("/leaderboard", params={"metric": "loss"})
    assert response.status_code == 422 and error(response)["code"] == "invalid_request"


def test_the_schema_says_vector_ids_are_distinct(registry: Registry) -> None:
    selection = _openapi(registry)["components"]["schemas"]["Selection"]
    vector_ids = next(s for s in selection["properties"]["vector_ids"]["anyOf"] if "items" in s)
    assert vector_ids["uniqueItems"] is True


def test_the_schema_says_an_upload_sha256_is_hex(registry: Registry, hospital: Any) -> None:
    upload = _openapi(registry)["components"]["schemas"]["UploadCreate"]
    assert upload["properties"]["sha256"]["pattern"] == "^[0-9a-fA-F]{64}$"
    with registry.client(hospital.token) as client:
        response = client.post("/uploads", json={"sha256": "g" * 64, "size": 10})
    assert response.status_code == 422 and error(response)["code"] == "invalid_request"


MISSING = "00000000-0000-0000-0000-000000000000"
"""an id nothing has: a request that passed validation would answer 404 (or 409) there"""


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        ("POST", f"/versions/{MISSING}/promote", {"stage": "production", "force": 0}, "force"),
        ("POST", f"/versions/{MISSING}/promote", {"stage": "staging", "force": "yes"}, "force"),
        ("POST", f"/versions/{MISSING}/promote", {"stage": "staging", "force": 1}, "force"),
        ("POST", "/merges", {"base_id": ""}, "base_id"),
        ("POST", "/merges", {"benchmark_id": ""}, "benchmark_id"),
        ("POST", "/merges", {"selection": {"vector_ids": [MISSING, ""]}}, "vector_ids"),
        ("POST", "/merges", {"seed": "1"}, "seed"),
        ("POST", "/merges", {"seed": True}, "seed"),
        ("POST", "/merges", {"selection": {"staleness_power": "0.5"}}, "staleness_power"),
        ("POST", "/secure/merges", {"base_id": ""}, "base_id"),
        ("POST", "/secure/merges", {"lambda": "0.5"}, "lambda"),
        ("POST", f"/versions/{MISSING}/evaluations", {"benchmark_id": ""}, "benchmark_id"),
        ("PUT", f"/hospitals/{MISSING}/privacy-budget", {"epsilon": "1", "delta": 0.1}, "epsilon"),
        ("PUT", f"/hospitals/{MISSING}/privacy-budget", {"epsilon": 1, "delta": False}, "delta"),
    ],
)
def test_a_value_of_the_wrong_type_is_422(
    registry: Registry, method: str, path: str, body: dict[str, Any], field: str
) -> None:
    """pydantic's lax mode would read 0 as false, "1" as 1 and true as 1; the schema says
    boolean, integer, number, and an id of at least one character."""
    before = registry.snapshot()
    with registry.admin() as admin:
        response = admin.request(method, path, json=body)
    assert response.status_code == 422, response.text
    assert error(response)["code"] == "invalid_request" and field in error(response)["message"]
    assert registry.snapshot() == before


def test_an_upload_size_is_a_json_integer(registry: Registry, hospital: Hospital) -> None:
    with registry.client(hospital.token) as client:
        response = client.post("/uploads", json={"sha256": "0" * 64, "size": "10"})
    assert response.status_code == 422 and "size" in error(response)["message"], response.text


@pytest.mark.parametrize("value", ["0.5", True])
def test_a_strategy_parameter_of_the_wrong_type_is_422(
    registry: Registry, base: dict[str, Any], value: Any
) -> None:
    """``"0.5"`` merged as 0.5 but was recorded (and hashed) as the string: the same merge
    asked with 0.5 made a second job."""
    before = registry.snapshot()
    with registry.admin() as admin:
        body = {"base_id": base["id"], "strategy": "task_arithmetic", "params": {"lambda": value}}
        response = admin.post("/merges", json=body)
    assert response.status_code == 422, response.text
    assert "lambda" in error(response)["message"]
    assert registry.snapshot() == before


def test_a_create_that_finds_its_record_documents_its_200(registry: Registry) -> None:
    """POST /uploads resumed a session or found the bytes already stored, and the other
    creates found the record, with a 200 the document did not list (the fuzzer's stateful
    phase pushed a file's sha256 again)."""
    paths = _openapi(registry)["paths"]
    for path in ("/uploads", "/uploads/{upload_id}/complete", "/vectors", "/bases"):
        answers = paths[f"/api/v1{path}"]["post"]["responses"]
        assert {"200", "201"} <= set(answers), path
        assert answers["200"]["content"] == answers["201"]["content"], path
