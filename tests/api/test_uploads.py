"""Resumable uploads: round trip, resume after a connection cut mid-part, offset
conflicts, idempotency, sha256 mismatch, size limits, ownership and expiry."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from app.db import make_sessionmaker
from app.main import sweep_uploads
from app.models import UploadSession
from medvec.hashing import sha256_file
from tests.api.conftest import API, MAX_UPLOAD, Hospital, Registry
from tests.api.factories import ModelKit
from tests.api.helpers import OCTET, RawConnection, error, put_part, resumable_push


def _start(client: Any, path: Path, sha256: str | None = None) -> dict[str, Any]:
    body = {"sha256": sha256 or sha256_file(path), "size": path.stat().st_size}
    response = client.post("/uploads", json=body)
    assert response.status_code in (200, 201), response.text
    return dict(response.json())


def test_resumable_round_trip(
    registry: Registry, base: dict[str, Any], kit: ModelKit, hospital: Hospital, tmp_path: Path
) -> None:
    path = kit.vector(hospital.name)
    with registry.client(hospital.token) as client:
        completed = resumable_push(client, path, part=5 << 20)
        assert completed.status_code == 201, completed.text
        vector = completed.json()
        assert vector["sha256"] == sha256_file(path)
        download = client.get(f"/vectors/{vector['id']}/download")
    target = tmp_path / "v.safetensors"
    target.write_bytes(download.content)
    assert sha256_file(target) == download.headers["X-Content-SHA256"] == vector["sha256"]


def test_connection_cut_mid_part_resumes_without_resending(
    registry: Registry, base: dict[str, Any], kit: ModelKit, hospital: Hospital
) -> None:
    path = kit.vector(hospital.name)
    size, data = path.stat().st_size, path.read_bytes()
    arrived = size // 3
    with registry.client(hospital.token) as client:
        session = _start(client, path)
        assert session["offset"] == 0
        connection = RawConnection(registry.url)
        connection.send_head(
            "PUT",
            f"{API}/uploads/{session['id']}?offset=0",
            {"Authorization": f"Bearer {hospital.token}", **OCTET, "Content-Length": str(size)},
        )
        connection.send(data[:arrived])
        held = 0
        for _ in range(600):  # until the server has written what was sent, then cut
            held = client.get(f"/uploads/{session['id']}").json()["offset"]
            if held == arrived:
                break
            time.sleep(0.05)
        assert held == arrived
        connection.close()
        for _ in range(600):  # the broken request finishes on the server
            if client.get(f"/uploads/{session['id']}").json()["offset"] == arrived:
                break
            time.sleep(0.05)
        resumed = _start(client, path)
        assert resumed["id"] == session["id"]
        assert resumed["offset"] == arrived
        wrong = put_part(client, session["id"], path, 0, 1024)
        assert wrong.status_code == 409
        assert error(wrong)["detail"]["offset"] == arrived
        rest = put_part(client, session["id"], path, arrived, size)
        assert rest.status_code == 200, rest.text
        assert rest.json()["offset"] == size
        completed = client.post(f"/uploads/{session['id']}/complete")
    assert completed.status_code == 201, completed.text
    assert completed.json()["sha256"] == sha256_file(path)


def test_known_bytes_need_no_upload(
    registry: Registry, base: dict[str, Any], kit: ModelKit, hospital: Hospital
) -> None:
    path = kit.vector(hospital.name)
    with registry.client(hospital.token) as client:
        first = resumable_push(client, path)
        assert first.status_code == 201
        before = registry.snapshot()
        again = _start(client, path)
        assert again["vector_id"] == first.json()["id"]
        assert again["offset"] == again["size"]
        completed = client.post(f"/uploads/{again['id']}/complete")
        assert completed.status_code == 200
        assert completed.json()["id"] == first.json()["id"]
        assert registry.snapshot()["rows"]["data_vectors"] == before["rows"]["data_vectors"]


def test_sha256_mismatch_is_refused_and_resets_the_upload(
    registry: Registry, base: dict[str, Any], kit: ModelKit, hospital: Hospital
) -> None:
    path = kit.vector(hospital.name)
    size = path.stat().st_size
    with registry.client(hospital.token) as client:
        session = _start(client, path, sha256="0" * 64)
        assert put_part(client, session["id"], path, 0, size).status_code == 200
        before = registry.snapshot()
        response = client.post(f"/uploads/{session['id']}/complete")
        assert response.status_code == 422
        body = error(response)
        assert body["code"] == "sha256_mismatch"
        assert body["detail"]["got"] == sha256_file(path)
        assert registry.snapshot() == before
        assert client.get(f"/uploads/{session['id']}").json()["offset"] == 0
        assert client.get("/vectors").json() == []


def test_rejected_vector_at_completion_stores_nothing(
    registry: Registry, base: dict[str, Any], kit: ModelKit, hospital: Hospital
) -> None:
    path = kit.vector(hospital.name, scale=float("nan"))
    with registry.client(hospital.token) as client:
        session = _start(client, path)
        assert put_part(client, session["id"], path, 0, path.stat().st_size).status_code == 200
        before = registry.snapshot()
        response = client.post(f"/uploads/{session['id']}/complete")
        assert response.status_code == 422
        assert error(response)["code"] == "vector_non_finite"
        assert registry.snapshot() == before
        assert client.get("/vectors").json() == []


def test_incomplete_upload_cannot_complete(
    registry: Registry, base: dict[str, Any], kit: ModelKit, hospital: Hospital
) -> None:
    path = kit.vector(hospital.name)
    with registry.client(hospital.token) as client:
        session = _start(client, path)
        assert put_part(client, session["id"], path, 0, 1000).status_code == 200
        response = client.post(f"/uploads/{session['id']}/complete")
    assert response.status_code == 409
    assert error(response)["detail"]["offset"] == 1000


def test_part_past_the_declared_size_is_refused(
    registry: Registry, base: dict[str, Any], hospital: Hospital
) -> None:
    with registry.client(hospital.token) as client:
        session = client.post("/uploads", json={"sha256": "1" * 64, "size": 100}).json()
        response = client.put(
            f"/uploads/{session['id']}", params={"offset": 0}, content=b"x" * 200, headers=OCTET
        )
        assert response.status_code == 413
        assert "declared size of 100 bytes" in error(response)["message"]
        assert client.get(f"/uploads/{session['id']}").json()["offset"] == 0

        def chunked() -> Any:
            yield b"y" * 60
            yield b"y" * 60

        streamed = client.put(
            f"/uploads/{session['id']}", params={"offset": 0}, content=chunked(), headers=OCTET
        )
        assert streamed.status_code == 413
        assert error(streamed)["detail"] == {"offset": 0, "size": 100}
        assert client.get(f"/uploads/{session['id']}").json()["offset"] == 0


def test_upload_larger_than_the_limit_is_refused(registry: Registry, hospital: Hospital) -> None:
    before = registry.snapshot()
    with registry.client(hospital.token) as client:
        response = client.post("/uploads", json={"sha256": "2" * 64, "size": MAX_UPLOAD + 1})
    assert response.status_code == 413
    assert error(response)["code"] == "payload_too_large"
    assert registry.snapshot() == before


def test_another_hospitals_upload_is_not_found(
    registry: Registry, hospital: Hospital, other_hospital: Hospital
) -> None:
    with registry.client(hospital.token) as client:
        session = client.post("/uploads", json={"sha256": "3" * 64, "size": 10}).json()
    with registry.client(other_hospital.token) as other:
        assert other.get(f"/uploads/{session['id']}").status_code == 404
        put = other.put(
            f"/uploads/{session['id']}", params={"offset": 0}, content=b"z" * 10, headers=OCTET
        )
        assert put.status_code == 404
        assert other.post(f"/uploads/{session['id']}/complete").status_code == 404


@pytest.mark.databases
def test_abandoned_upload_expires_and_its_bytes_go(
    registry: Registry, base: dict[str, Any], kit: ModelKit, hospital: Hospital
) -> None:
    path = kit.vector(hospital.name)
    with registry.client(hospital.token) as client:
        session = _start(client, path)
        assert put_part(client, session["id"], path, 0, 4096).status_code == 200
        part = registry.store.staging_path(f"upload-{session['id']}.part")
        assert part.stat().st_size == 4096
        registry.expire(UploadSession, session["id"])
        gone = client.get(f"/uploads/{session['id']}")
        assert gone.status_code == 410
        assert "expired" in error(gone)["message"]
        assert sweep_uploads(make_sessionmaker(registry.engine), registry.store) >= 1
        assert not part.exists()
        fresh = _start(client, path)
        assert fresh["id"] != session["id"] and fresh["offset"] == 0
    with registry.admin() as admin:
        events = admin.get("/audit", params={"target_id": session["id"]}).json()
    assert "upload.expired" in {e["action"] for e in events}
