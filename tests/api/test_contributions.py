"""Contributions per hospital, end to end on SQLite and PostgreSQL: the live API, the
worker's job on real PneumoniaMNIST validation images, and who may read what; and the
worker process's one ``Evaluator`` serving a tuned merge and its contributions."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sqlalchemy.orm import sessionmaker

from app.models import ModelVersion
from tests.api.conftest import Registry, make_hospital
from tests.api.factories import ModelKit
from tests.api.helpers import error, push
from tests.api.test_versions import make_version
from worker.contributions import compute_contributions
from worker.evaluate import Evaluator
from worker.merge import run_merge
from worker.screen import screen_vector
from worker.tune import tune_merge

OCTET = {"Content-Type": "application/octet-stream"}


def _benchmark(
    registry: Registry, datasets_dir: Path, tmp_path: Path, name: str = "pneumonia"
) -> str:
    path = tmp_path / f"{name}-val.npz"
    with np.load(datasets_dir / "pneumoniamnist.npz") as data:
        np.savez(
            path,
            val_images=data["val_images"][:200],
            val_labels=data["val_labels"][:200],
            test_images=data["test_images"][:50],
            test_labels=data["test_labels"][:50],
        )
    with registry.admin() as admin:
        created = admin.post(
            "/benchmarks",
            params={"name": f"{name}-{secrets.token_hex(3)}"},
            content=path.read_bytes(),
            headers=OCTET,
        )
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


def _push(registry: Registry, kit: ModelKit, token: str, name: str, scale: float) -> str:
    gen = torch.Generator().manual_seed(int(scale * 100))
    tensors = {
        k: v * scale + 1e-4 * torch.randn(v.shape, generator=gen) for k, v in kit.tensors.items()
    }
    with registry.client(token) as client:
        response = push(client, kit.vector(name, tensors=tensors, num_samples=64))
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def test_contributions_are_leave_one_out_differences_and_each_hospital_sees_its_own(
    registry: Registry,
    kit: ModelKit,
    base: dict[str, Any],
    datasets_dir: Path,
    tmp_path: Path,
) -> None:
    sessions = sessionmaker(registry.engine, expire_on_commit=False)
    settings = registry.worker_settings(eval_device="cpu")
    evaluator = Evaluator(settings)
    benchmark_id = _benchmark(registry, datasets_dir, tmp_path)
    # another benchmark of the task, first by name: the merge was judged on the one above,
    # so its contributions are too (they used whichever sorted first)
    _benchmark(registry, datasets_dir, tmp_path, name="aaa-another")
    hospitals = [make_hospital(registry, "contrib") for _ in range(3)]
    vectors = [
        _push(registry, kit, h.token, h.name, scale)
        for h, scale in zip(hospitals, (0.5, 1.0, 8.0), strict=True)
    ]
    body = {
        "base_id": base["id"],
        "selection": {"vector_ids": vectors},
        "benchmark_id": benchmark_id,
        "calibration": benchmark_id,
    }
    with registry.admin() as admin:
        job_id = admin.post("/merges", json=body).json()["job_id"]
    version_id = run_merge(
        sessions, registry.store, job_id, settings, evaluator=lambda: evaluator
    ).version_id
    assert version_id is not None
    path = f"/versions/{version_id}/contributions"
    with registry.admin() as admin:
        assert admin.get(path).status_code == 409  # not computed yet
        assert admin.post(path).status_code == 202

    compute_contributions(sessions, registry.store, evaluator, version_id, settings)
    with registry.admin() as admin:
        found = admin.get(path)
    assert found.status_code == 200, found.text
    document = found.json()
    assert document["benchmark_id"] == benchmark_id and document["split"] == "val"
    assert document["recalibrated_on"] == benchmark_id
    assert [h["vector_id"] for h in document["hospitals"]] == vectors
    everyone = document["all"]
    for entry in document["hospitals"]:
        without = entry["without"]
        assert entry["accuracy"] == everyone["accuracy"] - without["accuracy"]
        assert len(entry["sensitivity"]) == 2
        for got, a, b in zip(
            entry["sensitivity"], everyone["sensitivity"], without["sensitivity"], strict=True
        ):
            assert got is None or abs(got - (a - b)) < 1e-12

    # a hospital sees its own share only; a hospital that did not contribute sees nothing
    with registry.client(hospitals[1].token) as client:
        own = client.get(path)
    assert own.status_code == 200, own.text
    assert [h["hospital_id"] for h in own.json()["hospitals"]] == [hospitals[1].id]
    outsider = make_hospital(registry, "outsider")
    with registry.client(outsider.token) as client:
        assert client.get(path).status_code == 404
        assert client.post(path).status_code == 403

    # a non-linear version has no shares to take out
    with registry.admin() as admin:
        median = admin.post(
            "/merges",
            json={**body, "strategy": "median", "calibration": "none"},
        ).json()["job_id"]
    median_version = run_merge(
        sessions, registry.store, median, settings, evaluator=lambda: evaluator
    ).version_id
    with registry.admin() as admin:
        refused = admin.post(f"/versions/{median_version}/contributions")
    assert refused.status_code == 422, refused.text


def test_a_tuned_merge_and_its_contributions_decode_the_val_split_once_per_process(
    registry: Registry,
    kit: ModelKit,
    base: dict[str, Any],
    datasets_dir: Path,
    tmp_path: Path,
) -> None:
    """Lambda tuning, the merge's recalibration and validation passes, and every
    leave-one-out model read the benchmark's val split through the process's evaluator:
    decoded once, however many models are scored on it; so does screening, however many
    vectors arrive."""
    sessions = sessionmaker(registry.engine, expire_on_commit=False)
    settings = registry.worker_settings(eval_device="cpu")
    evaluator = Evaluator(settings)
    benchmark_id = _benchmark(registry, datasets_dir, tmp_path)
    hospitals = [make_hospital(registry, "tuned") for _ in range(2)]
    vectors = [
        _push(registry, kit, h.token, h.name, scale)
        for h, scale in zip(hospitals, (0.7, 2.0), strict=True)
    ]
    body = {
        "base_id": base["id"],
        "selection": {"vector_ids": vectors},
        "strategy": "task_arithmetic",
        "params": {"lambda": "tune", "lambda_grid": [0.5, 1.0]},
        "benchmark_id": benchmark_id,
        "calibration": benchmark_id,
    }
    with registry.admin() as admin:
        job_id = admin.post("/merges", json=body).json()["job_id"]

    outcome = tune_merge(sessions, registry.store, job_id, settings, evaluator=evaluator)
    assert outcome.version_id is not None
    with registry.admin() as admin:
        job = admin.get(f"/merges/{job_id}").json()
    assert set(job["params"]["tuning"]["scores"]) == {"0.5", "1.0"}
    assert evaluator.decoded == 1  # val: the grid, the calibration images, the merge

    document = compute_contributions(
        sessions, registry.store, evaluator, outcome.version_id, settings
    )
    assert len(document["hospitals"]) == 2
    assert evaluator.decoded == 1  # and every leave-one-out model

    # screening reads the same split through its process's evaluator: once, not per vector
    screening_evaluator = Evaluator(settings)
    for n in range(2):
        late = make_hospital(registry, "tuned")
        pushed = _push(registry, kit, late.token, late.name, 1.0 + n)
        screening = screen_vector(sessions, registry.store, pushed, settings, screening_evaluator)
        assert screening is not None and screening["val"] is not None
    assert screening_evaluator.decoded == 1


def test_a_secure_version_has_no_contributions_and_says_why(
    registry: Registry, kit: ModelKit, base: dict[str, Any]
) -> None:
    version = make_version(registry, kit, base)
    with registry.session() as session, session.begin():
        row = session.get(ModelVersion, version["id"])
        assert row is not None
        row.strategy = "secure_weighted_mean"
    try:
        with registry.admin() as admin:
            refused = admin.post(f"/versions/{version['id']}/contributions")
        assert refused.status_code == 422, refused.text
        assert "secure mode" in error(refused)["message"]
    finally:  # a version without inputs is damage to `medvec-server fsck` on the shared registry
        with registry.session() as session, session.begin():
            session.delete(session.get(ModelVersion, version["id"]))
        registry.store.local_path(version["sha256"]).unlink()  # its own file (unique bytes)
