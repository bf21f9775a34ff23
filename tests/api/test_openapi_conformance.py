"""Defects the schemathesis run (tests/fuzz) found: answers the OpenAPI document did not
describe, and requests it called valid that the registry refused."""

from __future__ import annotations

from typing import Any

import httpx

from tests.api.conftest import Registry
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


def test_a_create_that_finds_its_record_documents_its_200(registry: Registry) -> None:
    """POST /uploads resumed a session or found the bytes already stored, and the other
    creates found the record, with a 200 the document did not list (the fuzzer's stateful
    phase pushed a file's sha256 again)."""
    paths = _openapi(registry)["paths"]
    for path in ("/uploads", "/uploads/{upload_id}/complete", "/vectors", "/bases"):
        answers = paths[f"/api/v1{path}"]["post"]["responses"]
        assert {"200", "201"} <= set(answers), path
        assert answers["200"]["content"] == answers["201"]["content"], path


def test_promote_takes_force_as_a_json_boolean_only(registry: Registry) -> None:
    """``{"force": 0}`` was read as false: the schema says boolean, and a promotion that
    overrides the gate must be asked for unmistakably (found once the fuzzer named a
    real version; with an unknown one the answer was 404 either way)."""
    with registry.admin() as admin:
        for force in (0, 1, "true"):
            body = {"stage": "staging", "force": force}
            answer = admin.post("/versions/no-such-version/promote", json=body)
            assert answer.status_code == 422, (force, answer.text)
            assert error(answer)["code"] == "invalid_request"
