"""Failure behaviour found by probing the registry: absurd numbers, hostile files and
concurrent requests get a clear 4xx (or the same answer as the winner), never a 500,
and leave nothing half-stored."""

from __future__ import annotations

import pytest

from tests.api.conftest import Hospital, Registry
from tests.api.helpers import OCTET, error

HUGE = 2**63  # one past the largest signed 64-bit integer


@pytest.mark.parametrize("offset", [HUGE, 2**31])
def test_audit_offset_out_of_range_is_422(registry: Registry, offset: int) -> None:
    with registry.admin() as admin:
        response = admin.get("/audit", params={"offset": offset})
    assert response.status_code == 422, response.text
    assert error(response)["code"] == "invalid_request"


def test_upload_part_offset_out_of_range_is_422(registry: Registry, hospital: Hospital) -> None:
    with registry.client(hospital.token) as client:
        started = client.post("/uploads", json={"sha256": "ab" * 32, "size": 10})
        assert started.status_code == 201, started.text
        response = client.put(
            f"/uploads/{started.json()['id']}",
            params={"offset": HUGE},
            content=b"x",
            headers=OCTET,
        )
    assert response.status_code == 422, response.text
    assert error(response)["code"] == "invalid_request"
