"""Bases and benchmarks: registration from real files, idempotency, current base,
download round trip, and refusal of files that are not what they claim."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from medvec.hashing import sha256_file
from medvec.models import get_model, save_model_file
from tests.api.conftest import Hospital, Registry, verify
from tests.api.factories import SPEC, ModelKit, benchmark_npz
from tests.api.helpers import OCTET, error, push


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


def _fresh_base(folder: Path, *, spec_classes: int | None = None) -> Path:
    """A new ResNet-18 base file (new random weights); ``spec_classes`` makes its spec lie about the
    number of classes its weights hold, which only the architecture check can see."""
    from safetensors.torch import save_file

    model = get_model(SPEC.arch, **SPEC.builder_kwargs())
    path = save_model_file(folder / f"base-{secrets.token_hex(4)}.safetensors", model, SPEC)
    if spec_classes is None:
        return path
    lying = SPEC.model_copy(update={"num_classes": spec_classes})
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    metadata = {"medvec.format": "model", "medvec.spec": lying.model_dump_json()}
    save_file(state, str(path), metadata=metadata)
    return path


def _push_against(client: Any, kit: ModelKit, hospital: Hospital, base: dict[str, Any]) -> Any:
    vector = kit.vector(hospital.name, base_id=base["id"], base_sha256=base["sha256"])
    return push(client, vector)


def test_a_new_base_takes_no_vector_or_merge_until_a_worker_verified_it(
    registry: Registry, base: dict[str, Any], kit: ModelKit, hospital: Hospital, tmp_path: Path
) -> None:
    assert base["status"] == "ready" and base["reason"] is None
    with registry.admin() as admin:
        created = _register(admin, _fresh_base(tmp_path), "unverified")
        assert created.status_code == 201, created.text
        pending = created.json()
        assert pending["status"] == "verifying"
        before = registry.snapshot()
        merge = admin.post("/merges", json={"base_id": pending["id"]})
        assert merge.status_code == 409
        assert error(merge)["code"] == "base_not_ready"
        assert admin.get("/bases/current").json()["id"] != pending["id"]
    with registry.client(hospital.token) as client:
        refused = _push_against(client, kit, hospital, pending)
    assert refused.status_code == 409
    assert error(refused)["code"] == "base_not_ready"
    assert "retry" in error(refused)["message"]
    assert registry.snapshot() == before


def test_a_base_whose_weights_do_not_build_its_spec_is_rejected_by_the_worker(
    registry: Registry, base: dict[str, Any], kit: ModelKit, hospital: Hospital, tmp_path: Path
) -> None:
    with registry.admin() as admin:
        created = _register(admin, _fresh_base(tmp_path, spec_classes=3), "lying-spec")
        assert created.status_code == 201, created.text
        lying = created.json()
        assert lying["spec"]["num_classes"] == 3 and lying["status"] == "verifying"
        assert verify(registry.engine, registry.store, lying["id"]) == "rejected"
        assert verify(registry.engine, registry.store, lying["id"]) == "rejected"  # redelivered
        record = admin.get(f"/bases/{lying['id']}").json()
        assert record["status"] == "rejected"
        assert "fc.weight" in record["reason"]
        events = admin.get("/audit", params={"target_id": lying["id"]}).json()
        assert [e["action"] for e in events].count("base.rejected") == 1
        merge = admin.post("/merges", json={"base_id": lying["id"]})
        assert merge.status_code == 422
        assert error(merge)["code"] == "base_rejected"
    with registry.client(hospital.token) as client:
        refused = _push_against(client, kit, hospital, lying)
    assert refused.status_code == 422
    assert error(refused)["code"] == "base_rejected"
    assert "fc.weight" in error(refused)["message"]
