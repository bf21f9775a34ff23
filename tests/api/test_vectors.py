"""Vectors: one-shot push, download round trip, idempotency, supersession, every bad
input with its 4xx and nothing stored, and hospital isolation."""

from __future__ import annotations

import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from medvec.hashing import sha256_file
from medvec.models import ModelSpec
from tests.api.conftest import API, MAX_HEADER, MAX_NORM, MAX_UPLOAD, Hospital, Registry
from tests.api.factories import ModelKit, oversized_header_file
from tests.api.helpers import OCTET, RawConnection, error, push


def test_push_and_download_round_trip(
    registry: Registry, base: dict[str, Any], kit: ModelKit, hospital: Hospital, tmp_path: Path
) -> None:
    path = kit.vector(hospital.name)
    with registry.client(hospital.token) as client:
        pushed = push(client, path)
        assert pushed.status_code == 201, pushed.text
        vector = pushed.json()
        assert vector["sha256"] == sha256_file(path)
        assert vector["status"] == "validated"
        assert vector["base_id"] == base["id"]
        assert vector["hospital_id"] == hospital.id
        assert vector["num_samples"] == 64
        expected_norm = torch.sqrt(
            sum(
                ((t.double() ** 2).sum() for t in kit.tensors.values()),
                torch.zeros((), dtype=torch.float64),
            )
        )
        assert vector["norm"] == pytest.approx(float(expected_norm), rel=1e-6)
        download = client.get(f"/vectors/{vector['id']}/download")
    assert download.status_code == 200
    assert download.headers["X-Content-SHA256"] == vector["sha256"]
    (tmp_path / "back.safetensors").write_bytes(download.content)
    assert sha256_file(tmp_path / "back.safetensors") == sha256_file(path)
    with registry.admin() as admin:
        events = admin.get("/audit", params={"target_id": vector["id"]}).json()
    accepted = [e for e in events if e["action"] == "vector.accepted"]
    assert accepted and accepted[0]["ip"] == "127.0.0.1"
    assert accepted[0]["actor_token_id"] == hospital.token_id


@pytest.mark.databases
def test_same_bytes_are_idempotent(
    registry: Registry, base: dict[str, Any], kit: ModelKit, hospital: Hospital
) -> None:
    path = kit.vector(hospital.name)
    with registry.client(hospital.token) as client:
        first = push(client, path)
        assert first.status_code == 201, first.text
        before = registry.snapshot()
        again = push(client, path)
        assert again.status_code == 200, again.text
        assert again.json()["id"] == first.json()["id"]
        assert registry.snapshot()["rows"] == before["rows"]
        assert len(client.get("/vectors").json()) == 1


@pytest.mark.databases
def test_new_vector_supersedes_the_previous_one(
    registry: Registry, base: dict[str, Any], kit: ModelKit, hospital: Hospital
) -> None:
    with registry.client(hospital.token) as client:
        old = push(client, kit.vector(hospital.name)).json()
        new = push(client, kit.vector(hospital.name, scale=0.5))
        assert new.status_code == 201, new.text
        new_id = new.json()["id"]
        previous = client.get(f"/vectors/{old['id']}").json()
        assert previous["status"] == "superseded"
        assert previous["superseded_by_id"] == new_id
        latest = client.get("/vectors", params={"latest": True, "base_id": base["id"]}).json()
        assert [v["id"] for v in latest] == [new_id]
        assert {v["id"] for v in client.get("/vectors").json()} == {old["id"], new_id}


def _truncated(kit: ModelKit, name: str) -> Path:
    data = kit.vector(name).read_bytes()
    return kit.raw(data[: len(data) - 4096], "truncated")


def _without_key(kit: ModelKit, name: str) -> Path:
    tensors = dict(kit.tensors)
    tensors.pop("fc.bias")
    return kit.vector(name, tensors=tensors)


def _renamed_key(kit: ModelKit, name: str) -> Path:
    tensors = dict(kit.tensors)
    tensors["fc.extra"] = tensors.pop("fc.bias")
    return kit.vector(name, tensors=tensors)


def _wrong_shape(kit: ModelKit, name: str) -> Path:
    return kit.vector(name, tensors={**kit.tensors, "fc.weight": torch.zeros(3, 512)})


def _wrong_dtype(kit: ModelKit, name: str) -> Path:
    return kit.vector(name, tensors={**kit.tensors, "fc.weight": kit.tensors["fc.weight"].double()})


def _with_value(value: float) -> Callable[[ModelKit, str], Path]:
    def make(kit: ModelKit, name: str) -> Path:
        poisoned = kit.tensors["layer1.0.conv1.weight"].clone()
        poisoned.view(-1)[7] = value
        return kit.vector(name, tensors={**kit.tensors, "layer1.0.conv1.weight": poisoned})

    return make


def _over_norm(kit: ModelKit, name: str) -> Path:
    norm = float(
        torch.sqrt(
            sum(
                ((t.double() ** 2).sum() for t in kit.tensors.values()),
                torch.zeros((), dtype=torch.float64),
            )
        )
    )
    return kit.vector(name, scale=2 * MAX_NORM / norm)


def _unknown_base(kit: ModelKit, name: str) -> Path:
    return kit.vector(name, base_id="no-such-base", base_sha256="ab" * 32)


def _other_base_sha(kit: ModelKit, name: str) -> Path:
    return kit.vector(name, base_sha256="cd" * 32)


def _other_architecture(kit: ModelKit, name: str) -> Path:
    """A vector that names the registered base but says it is of another architecture."""
    return kit.vector(name, spec=ModelSpec(arch="resnet50", num_classes=2, image_size=28))


def _model_file(kit: ModelKit, name: str) -> Path:
    return kit.tuned_path


def _garbage(kit: ModelKit, name: str) -> Path:
    return kit.raw(struct.pack("<Q", 12) + b"not json at all", "garbage")


BAD_INPUTS: dict[str, tuple[Callable[[ModelKit, str], Path], str, str]] = {
    "truncated file": (_truncated, "vector_malformed", "truncated"),
    "garbage header": (_garbage, "vector_malformed", "not JSON"),
    "oversized header": (
        lambda kit, name: oversized_header_file(kit, name, MAX_HEADER + 1024),
        "vector_header_too_large",
        "header",
    ),
    "missing key": (_without_key, "vector_keys_mismatch", "fc.bias"),
    "unexpected key": (_renamed_key, "vector_keys_mismatch", "fc."),
    "wrong shape": (_wrong_shape, "vector_shape_mismatch", "fc.weight"),
    "wrong dtype": (_wrong_dtype, "vector_dtype_mismatch", "fc.weight"),
    "NaN": (_with_value(float("nan")), "vector_non_finite", "layer1.0.conv1.weight"),
    "Inf": (_with_value(float("inf")), "vector_non_finite", "layer1.0.conv1.weight"),
    "norm over the bound": (_over_norm, "vector_norm_exceeded", "exceeds the bound"),
    "unknown base": (_unknown_base, "unknown_base", "no-such-base"),
    "base sha256 mismatch": (_other_base_sha, "incompatible_base", "base sha256"),
    "another architecture": (_other_architecture, "incompatible_base", "differs from the base"),
    "a model, not a vector": (_model_file, "vector_wrong_format", "not a MedVec data vector"),
    "another hospital's name": (
        lambda kit, name: kit.vector("somebody-else"),
        "hospital_mismatch",
        "somebody-else",
    ),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_vector_is_refused_and_nothing_changes(
    case: str, registry: Registry, base: dict[str, Any], kit: ModelKit, hospital: Hospital
) -> None:
    make, code, needle = BAD_INPUTS[case]
    path = make(kit, hospital.name)
    before = registry.snapshot()
    with registry.client(hospital.token) as client:
        response = push(client, path)
        assert response.status_code == 422, response.text
        body = error(response)
        assert body["code"] == code
        assert needle in body["message"]
        assert " — " in body["message"]  # what is wrong, then how to fix it
        assert client.get("/vectors").json() == []
    assert registry.snapshot() == before


def test_body_over_the_size_limit_is_cut_off(
    registry: Registry, base: dict[str, Any], hospital: Hospital
) -> None:
    """Without a Content-Length the limit is enforced while streaming."""
    chunk = b"\0" * (1 << 20)

    def endless() -> Any:
        for _ in range(MAX_UPLOAD // len(chunk) + 2):
            yield chunk

    before = registry.snapshot()
    with registry.client(hospital.token) as client:
        response = client.post("/vectors", content=endless(), headers=OCTET)
    assert response.status_code == 413
    assert error(response)["code"] == "payload_too_large"
    assert registry.snapshot() == before


def test_declared_length_over_the_limit_is_refused_before_reading(
    registry: Registry, base: dict[str, Any], hospital: Hospital
) -> None:
    before = registry.snapshot()
    connection = RawConnection(registry.url)
    try:
        connection.send_head(
            "POST",
            f"{API}/vectors",
            {
                "Authorization": f"Bearer {hospital.token}",
                **OCTET,
                "Content-Length": str(MAX_UPLOAD + 1),
            },
        )
        status, body = connection.read_response()  # answered without sending the body
    finally:
        connection.close()
    assert status == 413
    assert body["code"] == "payload_too_large"
    assert "MEDVEC_MAX_UPLOAD_BYTES" in body["message"]
    assert registry.snapshot() == before


def test_hospitals_never_see_each_others_vectors(
    registry: Registry,
    base: dict[str, Any],
    kit: ModelKit,
    hospital: Hospital,
    other_hospital: Hospital,
) -> None:
    with registry.client(hospital.token) as mine:
        vector = push(mine, kit.vector(hospital.name)).json()
    with registry.client(other_hospital.token) as theirs:
        for path in (f"/vectors/{vector['id']}", f"/vectors/{vector['id']}/download"):
            response = theirs.get(path)
            assert response.status_code == 404
            assert error(response)["code"] == "not_found"
        missing = theirs.get("/vectors/00000000-0000-0000-0000-000000000000")
        assert error(missing)["message"].split(" — ")[0].startswith("no vector")
        assert theirs.get("/vectors").json() == []
        assert theirs.get("/vectors", params={"hospital_id": hospital.id}).json() == []
    with registry.admin() as admin:
        listed = admin.get("/vectors", params={"hospital_id": hospital.id}).json()
        assert [v["id"] for v in listed] == [vector["id"]]
        assert admin.get(f"/vectors/{vector['id']}/download").status_code == 200


def test_only_hospital_tokens_push(registry: Registry, base: dict[str, Any], kit: ModelKit) -> None:
    with registry.admin() as admin:
        response = push(admin, kit.vector("anyone"))
    assert response.status_code == 403
    assert "hospital token" in error(response)["message"]


def test_connection_cut_mid_body_leaves_nothing(
    registry: Registry, base: dict[str, Any], kit: ModelKit, hospital: Hospital
) -> None:
    data = kit.vector(hospital.name).read_bytes()
    before = registry.snapshot()
    connection = RawConnection(registry.url)
    connection.send_head(
        "POST",
        f"{API}/vectors",
        {"Authorization": f"Bearer {hospital.token}", **OCTET, "Content-Length": str(len(data))},
    )
    connection.send(data[: len(data) // 2])
    for _ in range(600):  # until the server is receiving: a staging file appears
        if registry.snapshot()["staging_tmp"]:
            break
        time.sleep(0.05)
    assert registry.snapshot()["staging_tmp"]  # half a body is on disk, the request open
    connection.close()
    for _ in range(600):  # until the server noticed and cleaned up
        if registry.snapshot() == before:
            break
        time.sleep(0.05)
    assert registry.snapshot() == before


@pytest.mark.parametrize("token", ["missing", "bad", "revoked", "removed"])
def test_push_without_a_valid_token_changes_nothing(
    token: str, registry: Registry, base: dict[str, Any], kit: ModelKit, hospital: Hospital
) -> None:
    """Also the push of a removed hospital: removal revoked its tokens."""
    path = kit.vector(hospital.name)
    with registry.admin() as admin:
        if token == "revoked":
            assert admin.delete(f"/tokens/{hospital.token_id}").status_code == 200
        if token == "removed":
            assert admin.delete(f"/hospitals/{hospital.id}").status_code == 200
    secret = {"missing": None, "bad": "mv_" + "0" * 43}.get(token, hospital.token)
    before = registry.snapshot()
    with registry.client(secret) as client:
        response = push(client, path)
        started = client.post("/uploads", json={"sha256": sha256_file(path), "size": 10})
    assert response.status_code == started.status_code == 401
    assert error(response)["code"] == "unauthenticated"
    assert registry.snapshot() == before
