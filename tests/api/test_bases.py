"""Bases and benchmarks: registration from real files, idempotency, current base,
download round trip, and refusal of files that are not what they claim."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medvec.hashing import sha256_file
from tests.api.conftest import Hospital, Registry
from tests.api.factories import ModelKit, benchmark_npz
from tests.api.helpers import OCTET, error


def _register(client: Any, path: Path, name: str, kind: str = "bases") -> Any:
    with path.open("rb") as body:
        return client.post(f"/{kind}", params={"name": name}, content=body, headers=OCTET)


def test_base_registration_reads_the_spec(base: dict[str, Any], kit: ModelKit) -> None:
    assert base["sha256"] == kit.base_sha256
    assert base["arch"] == "resnet18"
    assert base["spec"] == {
        "arch": "resnet18",
        "num_classes": 2,
        "in_channels": 3,
        "image_size": 28,
    }
    assert base["generation"] == 0
    assert base["provenance"] == {"name": "test-base"}


def test_same_base_bytes_are_idempotent(
    registry: Registry, base: dict[str, Any], kit: ModelKit
) -> None:
    before = registry.snapshot()
    with registry.admin() as admin:
        again = _register(admin, kit.base_path, "another-name")
    assert again.status_code == 200
    assert again.json()["id"] == base["id"]
    assert registry.snapshot() == before


def test_hospital_pulls_the_base(
    registry: Registry, base: dict[str, Any], hospital: Hospital, tmp_path: Path
) -> None:
    with registry.client(hospital.token) as client:
        assert client.get("/bases/current").json()["generation"] >= 0
        record = client.get(f"/bases/{base['id']}").json()
        response = client.get(f"/bases/{base['id']}/download")
        assert response.status_code == 200
        assert [b["id"] for b in client.get("/bases").json()].count(base["id"]) == 1
    target = tmp_path / "base.safetensors"
    target.write_bytes(response.content)
    assert sha256_file(target) == record["sha256"] == response.headers["X-Content-SHA256"]
    assert response.headers["content-length"] == str(record["size"])


def test_a_vector_is_not_a_base(registry: Registry, base: dict[str, Any], kit: ModelKit) -> None:
    vector = kit.vector("anyone")
    before = registry.snapshot()
    with registry.admin() as admin:
        response = _register(admin, vector, "not-a-base")
    assert response.status_code == 422
    body = error(response)
    assert body["code"] == "model_invalid"
    assert "not a MedVec model file" in body["message"]
    assert registry.snapshot() == before


def test_only_admins_register_bases(
    registry: Registry, base: dict[str, Any], kit: ModelKit, hospital: Hospital
) -> None:
    with registry.client(hospital.token) as client:
        response = _register(client, kit.base_path, "mine")
    assert response.status_code == 403


def test_unknown_base_is_404(registry: Registry, base: dict[str, Any]) -> None:
    with registry.admin() as admin:
        response = admin.get("/bases/nope/download")
    assert response.status_code == 404
    assert error(response)["code"] == "not_found"


def test_benchmark_registration(
    registry: Registry, datasets_dir: Path, tmp_path: Path, hospital: Hospital
) -> None:
    path = benchmark_npz(tmp_path / "bench.npz", datasets_dir, count=40)
    with registry.admin() as admin:
        created = _register(admin, path, f"pneumonia-{registry.backend}", "benchmarks")
        assert created.status_code == 201, created.text
        record = created.json()
        assert record["sizes"] == {"val": 40, "test": 40}
        assert record["num_classes"] == 2
        assert record["image_shape"] == [28, 28]
        assert record["sha256"] == sha256_file(path)
        duplicate = _register(admin, path, f"pneumonia-{registry.backend}", "benchmarks")
        assert duplicate.status_code == 409
    with registry.client(hospital.token) as client:
        assert client.get("/benchmarks").status_code == 403


def test_benchmark_without_a_test_split_is_refused(registry: Registry, tmp_path: Path) -> None:
    import numpy as np

    path = tmp_path / "val-only.npz"
    np.savez(path, val_images=np.zeros((4, 28, 28), np.uint8), val_labels=np.zeros((4, 1)))
    before = registry.snapshot()
    with registry.admin() as admin:
        response = _register(admin, path, "val-only", "benchmarks")
    assert response.status_code == 422
    assert "test_images" in error(response)["message"]
    assert registry.snapshot() == before
