"""Tokens and roles: missing, bad and revoked tokens; admin-only and hospital-only routes;
tokens stored hashed; every change audited with the caller's address."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from sqlalchemy import select

from app.models import ApiToken
from tests.api.conftest import Hospital, Registry, make_hospital
from tests.api.helpers import error

ADMIN_ONLY = [
    ("GET", "/hospitals"),
    ("POST", "/hospitals"),
    ("GET", "/tokens"),
    ("POST", "/tokens"),
    ("GET", "/benchmarks"),
    ("GET", "/versions"),
    ("POST", "/versions/rollback"),
    ("GET", "/audit"),
]


def test_missing_token_is_401(registry: Registry) -> None:
    with registry.client() as anonymous:
        response = anonymous.get("/whoami")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    body = error(response)
    assert body["code"] == "unauthenticated"
    assert "Authorization: Bearer" in body["message"]


def test_bad_token_is_401(registry: Registry) -> None:
    with registry.client("mv_" + "x" * 43) as client:
        response = client.get("/vectors")
    assert response.status_code == 401
    assert "not valid" in error(response)["message"]


def test_revoked_token_is_401(registry: Registry, hospital: Hospital) -> None:
    with registry.client(hospital.token) as client:
        assert client.get("/whoami").status_code == 200
        with registry.admin() as admin:
            revoked = admin.delete(f"/tokens/{hospital.token_id}")
            assert revoked.status_code == 200
            assert revoked.json()["revoked_at"] is not None
        response = client.get("/whoami")
    assert response.status_code == 401
    assert "revoked" in error(response)["message"]


def test_whoami(registry: Registry, hospital: Hospital) -> None:
    with registry.client(hospital.token) as client:
        me = client.get("/whoami").json()
    assert me == {
        "role": "hospital",
        "hospital_id": hospital.id,
        "hospital_name": hospital.name,
        "token_name": f"{hospital.name}-token",
    }
    with registry.admin() as admin:
        assert admin.get("/whoami").json()["role"] == "admin"


@pytest.mark.parametrize(("method", "path"), ADMIN_ONLY)
def test_admin_routes_refuse_hospital_tokens(
    registry: Registry, hospital: Hospital, method: str, path: str
) -> None:
    before = registry.snapshot()
    with registry.client(hospital.token) as client:
        response = client.request(method, path, json={"name": "x", "role": "admin"})
    assert response.status_code == 403
    assert error(response)["code"] == "forbidden"
    assert registry.snapshot()["rows"] == before["rows"]


def test_tokens_are_stored_hashed_and_never_listed(registry: Registry) -> None:
    hospital = make_hospital(registry)
    with registry.session() as session:
        row = session.scalar(select(ApiToken).where(ApiToken.id == hospital.token_id))
    assert row is not None
    assert row.token_hash == hashlib.sha256(hospital.token.encode()).hexdigest()
    assert hospital.token.startswith("mv_") and len(hospital.token) == 46
    with registry.admin() as admin:
        listed = admin.get("/tokens").json()
    assert all("token" not in t and "token_hash" not in t for t in listed)
    assert hospital.token_id in {t["id"] for t in listed}


def test_token_rules(registry: Registry) -> None:
    with registry.admin() as admin:
        no_hospital = admin.post("/tokens", json={"name": "t", "role": "hospital"})
        assert no_hospital.status_code == 422
        assert "hospital_id" in error(no_hospital)["message"]
        unknown = admin.post(
            "/tokens", json={"name": "t", "role": "hospital", "hospital_id": "nope"}
        )
        assert unknown.status_code == 404
        bad_role = admin.post("/tokens", json={"name": "t", "role": "root"})
        assert bad_role.status_code == 422
        assert error(bad_role)["code"] == "invalid_request"


def test_duplicate_hospital_is_409(registry: Registry, hospital: Hospital) -> None:
    with registry.admin() as admin:
        response = admin.post("/hospitals", json={"name": hospital.name})
    assert response.status_code == 409
    assert hospital.name in error(response)["message"]


def test_state_changes_are_audited(registry: Registry) -> None:
    hospital = make_hospital(registry)
    with registry.admin() as admin:
        events: list[dict[str, Any]] = admin.get("/audit", params={"limit": 1000}).json()
    created = [e for e in events if e["target_id"] == hospital.id]
    assert [e["action"] for e in created] == ["hospital.created"]
    assert created[0]["ip"] == "127.0.0.1"
    assert created[0]["actor"].startswith("token:")
    token = [e for e in events if e["target_id"] == hospital.token_id]
    assert token[0]["action"] == "token.created"
    assert token[0]["payload"]["hospital_id"] == hospital.id
