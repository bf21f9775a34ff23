"""Failure behaviour found by probing the registry: absurd numbers, hostile files and
concurrent requests get a clear 4xx (or the same answer as the winner), never a 500,
and leave nothing half-stored."""

from __future__ import annotations

import io
import secrets
import struct
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from medvec.hashing import sha256_file
from medvec.vectors import VectorMetadata, save_vector
from tests.api.conftest import Hospital, Registry
from tests.api.factories import ModelKit
from tests.api.helpers import OCTET, error, push, put_part, resumable_push

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


@pytest.mark.parametrize("body", [None, b""], ids=["no body", "zero bytes"])
def test_empty_upload_part_is_422(
    registry: Registry, hospital: Hospital, body: bytes | None
) -> None:
    with registry.client(hospital.token) as client:
        started = client.post("/uploads", json={"sha256": secrets.token_hex(32), "size": 10})
        assert started.status_code == 201, started.text
        upload_id = started.json()["id"]
        before = registry.snapshot()
        response = client.put(
            f"/uploads/{upload_id}", params={"offset": 0}, content=body, headers=OCTET
        )
        assert response.status_code == 422, response.text
        assert error(response)["code"] == "empty_part"
        assert error(response)["detail"] == {"offset": 0}
        assert client.get(f"/uploads/{upload_id}").json()["offset"] == 0
    assert registry.snapshot() == before


def _allow(response: httpx.Response) -> set[str]:
    return {m.strip() for m in response.headers["allow"].split(",")}


def test_options_and_405_name_every_method_of_the_path(registry: Registry) -> None:
    with registry.admin() as admin:
        options = admin.options("/vectors")
        wrong = admin.delete("/vectors")
        single = admin.options("/audit")
        missing = admin.options("/no-such-thing")
    assert options.status_code == 204, options.text
    assert _allow(options) == {"GET", "POST", "OPTIONS"}
    assert wrong.status_code == 405, wrong.text
    assert error(wrong)["code"] == "http_405"
    assert _allow(wrong) == {"GET", "POST", "OPTIONS"}
    assert _allow(single) == {"GET", "OPTIONS"}
    assert missing.status_code == 404


def test_unparsable_json_body_is_400(registry: Registry) -> None:
    before = registry.snapshot()
    with registry.admin() as admin:
        response = admin.post(
            "/hospitals", content=b'{"name": ', headers={"Content-Type": "application/json"}
        )
    assert response.status_code == 400, response.text
    assert error(response)["code"] == "invalid_json"
    assert registry.snapshot() == before


def test_openapi_lists_every_error_status_with_the_error_body(registry: Registry) -> None:
    spec = httpx.get(f"{registry.url}/openapi.json").json()
    ref = {"$ref": "#/components/schemas/ErrorBody"}
    assert "HTTPValidationError" not in str(spec)
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            answers = operation["responses"]
            where = f"{method.upper()} {path}"
            assert "500" in answers, where
            if "parameters" in operation or "requestBody" in operation:
                assert {"400", "422"} <= set(answers), where
            for status, answer in answers.items():
                if status.startswith(("4", "5")):
                    assert answer["content"]["application/json"]["schema"] == ref, where
    assert "413" in spec["paths"]["/api/v1/uploads/{upload_id}"]["put"]["responses"]
    assert "413" in spec["paths"]["/api/v1/vectors"]["post"]["responses"]


def _npz(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]  # an "allow_pickle" key is not ruled out
    return buffer.getvalue()


IMAGES = np.zeros((4, 28, 28), np.uint8)
BAD_BENCHMARKS = {
    "empty body": (b"", "not a readable .npz"),
    "zero images": (
        _npz(test_images=np.zeros((0, 28, 28), np.uint8), test_labels=np.zeros((0, 1), np.int64)),
        "no images",
    ),
    "label 2**62": (
        _npz(test_images=IMAGES, test_labels=np.array([[0], [1], [0], [2**62]], np.int64)),
        "classes",
    ),
    "float labels": (
        _npz(test_images=IMAGES, test_labels=np.array([[0.0], [1.0], [0.5], [1.0]])),
        "integers",
    ),
    "pickled object array": (
        _npz(test_images=IMAGES, test_labels=np.array([[0], [1], [None], [1]], dtype=object)),
        "not a readable .npz",
    ),
}


@pytest.mark.parametrize("case", list(BAD_BENCHMARKS))
def test_bad_benchmark_is_422_and_stores_nothing(registry: Registry, case: str) -> None:
    body, needle = BAD_BENCHMARKS[case]
    before = registry.snapshot()
    with registry.admin() as admin:
        response = admin.post(
            "/benchmarks",
            params={"name": f"bad-{secrets.token_hex(4)}"},
            content=body,
            headers=OCTET,
        )
    assert response.status_code == 422, response.text
    assert needle in error(response)["message"]
    assert registry.snapshot() == before


def _one_shot(client: Any, path: Path) -> Any:
    return push(client, path)


PATHS: dict[str, Callable[[Any, Path], Any]] = {"one-shot": _one_shot, "resumable": resumable_push}


def _deeply_nested(kit: ModelKit, _name: str) -> Path:
    depth = 100_000
    return kit.raw(struct.pack("<Q", 2 * depth) + b"[" * depth + b"]" * depth, "nested")


def _samples(count: int) -> Callable[[ModelKit, str], Path]:
    return lambda kit, name: kit.vector(name, num_samples=count)


HOSTILE_VECTORS: dict[str, tuple[Callable[[ModelKit, str], Path], str]] = {
    "header nested 100,000 deep": (_deeply_nested, "vector_malformed"),
    "num_samples 2**63": (_samples(2**63), "invalid_input"),
    "num_samples 2**31": (_samples(2**31), "invalid_input"),
}


@pytest.mark.parametrize("way", list(PATHS))
@pytest.mark.parametrize("case", list(HOSTILE_VECTORS))
def test_hostile_vector_is_422_and_leaves_no_row_and_no_blob(
    registry: Registry,
    base: dict[str, Any],
    kit: ModelKit,
    hospital: Hospital,
    case: str,
    way: str,
) -> None:
    make, code = HOSTILE_VECTORS[case]
    path = make(kit, hospital.name)
    before = registry.snapshot()
    with registry.client(hospital.token) as client:
        response = PATHS[way](client, path)
        assert response.status_code == 422, response.text
        assert error(response)["code"] == code
        assert client.get("/vectors").json() == []
    after = registry.snapshot()
    assert after["blobs"] == before["blobs"]
    assert after["staging_tmp"] == before["staging_tmp"]
    assert after["rows"]["data_vectors"] == before["rows"]["data_vectors"]
    if way == "one-shot":
        assert after == before


@pytest.mark.parametrize("way", list(PATHS))
def test_errors_name_no_server_path(
    registry: Registry, base: dict[str, Any], kit: ModelKit, hospital: Hospital, way: str
) -> None:
    """A refused file's error says what is wrong, never where the server staged it."""
    path = _deeply_nested(kit, hospital.name)
    with registry.client(hospital.token) as client:
        response = PATHS[way](client, path)
    assert response.status_code == 422, response.text
    body = error(response)
    assert body["code"] == "vector_malformed"
    assert "path" not in (body["detail"] or {}), body
    data_dir = registry.settings.data_dir
    for root in {str(data_dir), str(data_dir.resolve()), str(registry.store.staging)}:
        assert root not in response.text, response.text


@pytest.mark.databases
@pytest.mark.parametrize("way", list(PATHS))
def test_a_row_the_database_refuses_leaves_no_blob(
    registry: Registry,
    base: dict[str, Any],
    kit: ModelKit,
    hospital: Hospital,
    way: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Even past validation, the blob only lands once its row has been written."""
    from app.services import vectors

    monkeypatch.setattr(vectors, "MAX_NUM_SAMPLES", 2**64)  # let the insert itself fail
    path = kit.vector(hospital.name, num_samples=2**63)
    before = registry.snapshot()
    with registry.client(hospital.token) as client:
        response = PATHS[way](client, path)
        assert response.status_code == 500, response.text
        assert client.get("/vectors").json() == []
    after = registry.snapshot()
    assert after["blobs"] == before["blobs"]
    assert after["staging_tmp"] == before["staging_tmp"]
    assert after["rows"]["data_vectors"] == before["rows"]["data_vectors"]
    body = error(response)
    assert body["code"] == "internal_error"


def _at_once(count: int, call: Callable[[int], Any]) -> list[Any]:
    """Run ``call(i)`` for i in range(count) on threads released together."""
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = call(i)
        except Exception as exc:  # noqa: BLE001 - reported by the assertions below
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    return results


@pytest.mark.databases
def test_concurrent_completions_agree(
    registry: Registry, base: dict[str, Any], kit: ModelKit, hospital: Hospital
) -> None:
    path = kit.vector(hospital.name)
    size = path.stat().st_size
    with registry.client(hospital.token) as client:
        started = client.post("/uploads", json={"sha256": sha256_file(path), "size": size})
        upload_id = started.json()["id"]
        assert put_part(client, upload_id, path, 0, size).status_code == 200

    def complete(_i: int) -> httpx.Response:
        with registry.client(hospital.token) as client:
            return client.post(f"/uploads/{upload_id}/complete")

    answers = _at_once(6, complete)
    assert all(isinstance(a, httpx.Response) for a in answers), answers
    statuses = sorted(a.status_code for a in answers)
    assert statuses.count(201) == 1, [a.text for a in answers]
    assert set(statuses) <= {200, 201, 409}, [a.text for a in answers]
    ids = {a.json()["id"] for a in answers if a.status_code in (200, 201)}
    assert len(ids) == 1
    for answer in answers:
        if answer.status_code == 409:
            assert error(answer)["code"] == "conflict"
    with registry.client(hospital.token) as client:
        again = client.post(f"/uploads/{upload_id}/complete")
        assert again.status_code == 200, again.text
        assert again.json()["id"] in ids
        assert [v["id"] for v in client.get("/vectors").json()] == list(ids)


@pytest.mark.databases
def test_concurrent_pushes_leave_one_current_vector(
    registry: Registry, base: dict[str, Any], kit: ModelKit, hospital: Hospital
) -> None:
    paths = [kit.vector(hospital.name, scale=1.0 + i / 100) for i in range(10)]

    def send(i: int) -> httpx.Response:
        with registry.client(hospital.token) as client:
            return push(client, paths[i])

    answers = _at_once(len(paths), send)
    assert all(isinstance(a, httpx.Response) for a in answers), answers
    assert all(a.status_code in (201, 409) for a in answers), [a.text for a in answers]
    with registry.client(hospital.token) as client:
        listed = client.get("/vectors", params={"base_id": base["id"]}).json()
    current = [v for v in listed if v["status"] == "validated"]
    assert len(current) == 1, [v["status"] for v in listed]


@pytest.mark.databases
def test_concurrent_pushes_of_the_same_bytes_answer_the_same_vector(
    registry: Registry, base: dict[str, Any], kit: ModelKit, hospital: Hospital
) -> None:
    path = kit.vector(hospital.name, scale=1.5)

    def send(_i: int) -> httpx.Response:
        with registry.client(hospital.token) as client:
            return push(client, path)

    answers = _at_once(6, send)
    assert all(isinstance(a, httpx.Response) for a in answers), answers
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [200] * 5 + [201], [a.text for a in answers]
    assert len({a.json()["id"] for a in answers}) == 1
    with registry.client(hospital.token) as client:
        assert len(client.get("/vectors").json()) == 1


NUL_TEXT = "ward\x00a"


@pytest.mark.parametrize(
    "path, body",
    [
        ("/tokens", {"name": "t", "role": "hospital", "hospital_id": NUL_TEXT}),
        ("/tokens", {"name": NUL_TEXT, "role": "admin"}),
        ("/hospitals", {"name": NUL_TEXT}),
    ],
    ids=["token hospital_id", "token name", "hospital name"],
)
@pytest.mark.databases
def test_nul_in_request_body_is_422(registry: Registry, path: str, body: dict[str, Any]) -> None:
    """The fuzzer's find: PostgreSQL text cannot hold NUL, which made this a 500."""
    before = registry.snapshot()
    with registry.admin() as admin:
        response = admin.post(path, json=body)
    assert response.status_code == 422, response.text
    assert error(response)["code"] == "invalid_request"
    assert registry.snapshot() == before


@pytest.mark.databases
def test_nul_in_a_property_the_body_does_not_declare_is_ignored_like_the_property(
    registry: Registry,
) -> None:
    """The fuzzer's find (schemathesis' "schema-valid request rejected"): NUL in an
    undeclared property, which the registry ignores and stores nowhere, was a 422."""
    name = f"extra-{secrets.token_hex(4)}"
    with registry.admin() as admin:
        response = admin.post("/hospitals", json={"name": name, "x\x00": {"y": NUL_TEXT}})
    assert response.status_code == 201, response.text
    assert response.json()["name"] == name


@pytest.mark.databases
def test_an_upload_size_past_what_json_holds_exactly_is_422(
    registry: Registry, hospital: Hospital
) -> None:
    """The schema bounds ``size`` (the fuzzer sent 2e22, then 2^63 + 192): a 422 for bad
    input, as the document says, not the 413 of a size over the configured limit."""
    with registry.client(hospital.token) as client:
        for size in (2**53, 2**63 + 192):
            response = client.post("/uploads", json={"sha256": "0" * 64, "size": size})
            assert response.status_code == 422, response.text
    assert error(response)["code"] == "invalid_request"


def test_the_openapi_document_says_request_text_holds_no_nul(registry: Registry) -> None:
    """What the NUL check refuses is in the schema, so a client (or a fuzzer) can know it."""
    schemas = httpx.get(f"{registry.url}/openapi.json").json()["components"]["schemas"]
    no_nul = {"pattern": "^[^\\x00]*$"}
    assert no_nul.items() <= schemas["HospitalCreate"]["properties"]["name"].items()
    nullable = schemas["TokenCreate"]["properties"]["hospital_id"]["anyOf"]
    assert no_nul.items() <= nullable[0].items()


@pytest.mark.parametrize(
    "path, params",
    [
        ("/vectors/ab%00cd", {}),
        ("/audit", {"action": NUL_TEXT}),
        ("/vectors", {"hospital_id": NUL_TEXT}),
    ],
    ids=["path", "audit query", "vectors query"],
)
@pytest.mark.databases
def test_nul_in_path_or_query_is_422(registry: Registry, path: str, params: dict[str, str]) -> None:
    with registry.admin() as admin:
        response = admin.get(path, params=params)
    assert response.status_code == 422, response.text
    assert error(response)["code"] == "invalid_request"


@pytest.mark.databases
@pytest.mark.parametrize("field", ["hospital", "base_id"])
def test_nul_in_vector_metadata_is_422_and_stores_nothing(
    registry: Registry, hospital: Hospital, base: dict[str, Any], kit: ModelKit, field: str
) -> None:
    """Metadata that skipped the client's validation, as a hand-made file would."""
    fields = {**kit.metadata(hospital.name).model_dump(), field: NUL_TEXT}
    fields["spec"] = kit.metadata(hospital.name).spec
    path = save_vector(
        kit.raw(b"", "nul").with_suffix(".safetensors"),
        kit.tensors,
        VectorMetadata.model_construct(**fields),
    )
    before = registry.snapshot()
    with registry.client(hospital.token) as client:
        response = push(client, path)
    assert response.status_code == 422, response.text
    assert registry.snapshot() == before
