"""Workers end to end on real services: PostgreSQL, Redis, a ``celery worker`` process,
real BlobMNIST images and ResNet-18 vectors fine-tuned on them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from sqlalchemy import text
from torch.nn import functional as F

from app.db import make_engine
from app.services.merges import MERGE_TASK, POLICY_TASK
from medvec.calibration import recalibrate_bn
from medvec.data import load_npz
from medvec.evaluation import evaluate_model
from medvec.merging import merge_files
from medvec.models import load_model_file, read_model_provenance
from medvec.vectors import is_running_stat, load_vector
from tests.integration import factories
from tests.integration.conftest import Registry, World
from tests.servers import WorkerProcess
from worker.celery_app import MedVecCelery
from worker.config import WorkerSettings

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]


def _finished(job: dict[str, Any]) -> bool:
    return job["status"] in ("succeeded", "failed")


def _evaluated(splits: set[str]) -> Any:
    def done(rows: list[dict[str, Any]]) -> bool:
        completed = {r["split"] for r in rows if r["status"] == "completed"}
        failed = [r for r in rows if r["status"] == "failed"]
        assert not failed, [r["error"] for r in failed]
        return splits <= completed

    return done


def _versions_of(registry: Registry, job_id: str) -> list[dict[str, Any]]:
    return [
        v for v in registry.call("GET", "/versions") if v["params"].get("merge_job_id") == job_id
    ]


def test_merge_then_evaluate_matches_an_independent_computation(
    registry: Registry, world: World
) -> None:
    body = {
        "base_id": world.base["id"],
        "strategy": "weighted_mean",
        "benchmark_id": world.benchmark["id"],
    }
    accepted = registry.call("POST", "/merges", json=body)
    assert accepted["status"] == "queued"

    job = registry.wait(f"/merges/{accepted['job_id']}", _finished)
    assert job["status"] == "succeeded", job["error"]
    assert job["attempts"] == 1
    assert sorted(i["vector_id"] for i in job["selection"]["inputs"]) == sorted(
        v["id"] for v in world.vectors
    )
    version = registry.call("GET", f"/versions/{job['version_id']}")
    assert {i["vector_id"]: i["weight"] for i in version["inputs"]} == {
        v["id"]: float(v["num_samples"]) for v in world.vectors
    }

    # test is reported; val, which a version is chosen by, is evaluated as well
    rows = registry.wait(f"/versions/{version['id']}/evaluations", _evaluated({"test", "val"}))
    metrics = next(r for r in rows if r["split"] == "test")["metrics"]
    model_file = registry.tmp / "merged.safetensors"
    download = registry.client.get(
        f"/api/v1/versions/{version['id']}/download", headers=registry.headers()
    )
    assert download.status_code == 200
    model_file.write_bytes(download.content)
    accuracy, n = factories.accuracy_by_hand(model_file, world.benchmark_path)
    assert metrics["n"] == n == 1000
    assert metrics["accuracy"] == pytest.approx(accuracy, abs=1e-9)
    confusion = np.array(metrics["confusion_matrix"])
    assert confusion.shape == (8, 8) and confusion.sum() == 1000
    assert np.trace(confusion) / 1000 == pytest.approx(accuracy, abs=1e-9)
    for key in ("balanced_accuracy", "auc_macro", "f1_macro", "sensitivity", "specificity", "ece"):
        assert key in metrics
    val = next(r for r in rows if r["split"] == "val")["metrics"]
    val_accuracy, val_n = factories.accuracy_by_hand(model_file, world.benchmark_path, "val")
    assert val["n"] == val_n == 300 and val["accuracy"] == pytest.approx(val_accuracy, abs=1e-9)
    assert len(rows) == 2  # one row per split, each evaluated once

    board = registry.call("GET", "/leaderboard", params={"metric": "accuracy"})
    assert version["id"] in [row["version_id"] for row in board]

    hospital = registry.hospital("hospital-0")
    path = f"/api/v1/versions/{version['id']}/evaluations"
    hidden = registry.client.get(path, headers=registry.headers(hospital))
    assert hidden.status_code == 404  # hospitals see the production model's only
    registry.call("POST", f"/versions/{version['id']}/promote", json={"stage": "production"})
    seen = registry.call("GET", "/versions/production/evaluations", who=hospital)
    assert {r["split"]: r["metrics"]["accuracy"] for r in seen} == {
        "test": metrics["accuracy"],
        "val": val["accuracy"],
    }


def test_same_request_is_one_job_and_duplicate_delivery_one_version(
    registry: Registry, world: World, celery: MedVecCelery, settings: WorkerSettings
) -> None:
    body = {
        "base_id": world.base["id"],
        "strategy": "ties",
        "params": {"density": 0.5},
        "selection": {"vector_ids": [world.vectors[0]["id"], world.vectors[1]["id"]]},
    }
    job_id = registry.call("POST", "/merges", json=body)["job_id"]
    duplicates = [
        celery.send_task(
            MERGE_TASK, kwargs={"job_id": job_id}, queue=settings.queue, ignore_result=False
        )
        for _ in range(2)
    ]
    # disable_sync_subtasks=False: this test process is a client, but an embedded worker
    # thread started earlier in the session (the CLI tests' registry) sets Celery's
    # process-wide "inside a worker" flag, which would refuse the wait
    results = {d.get(timeout=240, disable_sync_subtasks=False) for d in duplicates}

    job = registry.wait(f"/merges/{job_id}", _finished)
    assert job["status"] == "succeeded", job["error"]
    assert results == {job["version_id"]}
    assert [v["id"] for v in _versions_of(registry, job_id)] == [job["version_id"]]
    again = registry.call("POST", "/merges", json=body)
    assert again == {"job_id": job_id, "status": "succeeded"}


def test_bad_selection_is_refused_before_any_work(
    registry: Registry, world: World, settings: WorkerSettings
) -> None:
    other = registry.register_base(seed=2)
    foreign, doomed = (
        registry.push(
            name,
            factories.perturbed_vector(
                other["path"],
                registry.tmp / f"other-{name}.safetensors",
                base_id=other["id"],
                base_sha256=other["sha256"],
                hospital=name,
                seed=seed,
            ),
        )
        for seed, name in enumerate(["hospital-0", "hospital-1"])
    )
    engine = make_engine(str(settings.database_url))
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE data_vectors SET status='rejected', reason='test' WHERE id=:id"),
            {"id": doomed["id"]},
        )
    engine.dispose()
    jobs_before = registry.call("GET", "/merges")

    cases = [
        (world.base["id"], [world.vectors[0]["id"], foreign["id"]], 422, "made against base"),
        (other["id"], [foreign["id"], doomed["id"]], 422, "rejected"),
        (world.base["id"], [world.vectors[0]["id"], "no-such-vector"], 404, "no vector"),
    ]
    for base_id, ids, status, message in cases:
        body = {"base_id": base_id, "selection": {"vector_ids": ids}}
        response = registry.client.post("/api/v1/merges", json=body, headers=registry.headers())
        assert response.status_code == status, response.text
        assert message in response.json()["message"]
    assert registry.call("GET", "/merges") == jobs_before


def test_killed_worker_leaves_no_version_and_the_job_completes_after_restart(
    registry: Registry, world: World, worker: WorkerProcess
) -> None:
    body = {
        "base_id": world.base["id"],
        "strategy": "task_arithmetic",
        "params": {"lambda": 0.5},
        "selection": {"vector_ids": [world.vectors[1]["id"], world.vectors[2]["id"]]},
    }
    job_id = registry.call("POST", "/merges", json=body)["job_id"]
    registry.wait(f"/merges/{job_id}", lambda j: j["status"] == "running", poll=0.1)
    worker.kill()

    job = registry.call("GET", f"/merges/{job_id}")
    assert job["status"] == "running" and job["version_id"] is None
    assert _versions_of(registry, job_id) == []

    worker.start()
    job = registry.wait(f"/merges/{job_id}", _finished, timeout=300)
    assert job["status"] == "succeeded", job["error"]
    assert job["attempts"] == 2
    assert [v["id"] for v in _versions_of(registry, job_id)] == [job["version_id"]]


def test_task_arithmetic_lambda_tuned_on_val_and_reported_on_test(
    registry: Registry, world: World
) -> None:
    body = {
        "base_id": world.base["id"],
        "strategy": "task_arithmetic",
        "params": {"lambda": "tune", "lambda_grid": [0.3, 1.0]},
        "benchmark_id": world.benchmark["id"],
    }
    job_id = registry.call("POST", "/merges", json=body)["job_id"]
    job = registry.wait(f"/merges/{job_id}", _finished)
    assert job["status"] == "succeeded", job["error"]
    tuning = job["params"]["tuning"]
    assert set(tuning["scores"]) == {"0.3", "1.0"}
    # each grid point was scored with its BatchNorm statistics recomputed on val images
    assert tuning["recalibrated_on"] == world.benchmark["id"]
    best = max(tuning["scores"].items(), key=lambda kv: (kv[1], -float(kv[0])))
    assert job["params"]["lambda"] == tuning["lambda"] == float(best[0])

    rows = registry.wait(f"/versions/{job['version_id']}/evaluations", _evaluated({"val", "test"}))
    val = next(r for r in rows if r["split"] == "val")["metrics"]
    assert val["n"] == 300
    assert val["accuracy"] == pytest.approx(tuning["scores"][str(float(best[0]))])
    version = registry.call("GET", f"/versions/{job['version_id']}")
    assert version["calibration"]["benchmark_id"] == world.benchmark["id"]
    stored = version["mergeability"]["val_accuracy_recalibrated"]
    assert stored == pytest.approx(val["accuracy"], abs=2 / 300)  # engine vs scan rounding


def test_auto_merge_fires_after_k_new_vectors_and_not_before(
    registry: Registry, celery: MedVecCelery, settings: WorkerSettings
) -> None:
    base = registry.register_base(seed=3)

    def push(index: int) -> None:
        name = registry.hospital(f"auto-{index}")
        vector = factories.perturbed_vector(
            base["path"],
            registry.tmp / f"auto-{index}.safetensors",
            base_id=base["id"],
            base_sha256=base["sha256"],
            hospital=name,
            seed=100 + index,
        )
        registry.push(name, vector)

    def check() -> list[str]:
        result = celery.send_task(POLICY_TASK, kwargs={"base_id": base["id"]}, queue=settings.queue)
        return list(result.get(timeout=120, disable_sync_subtasks=False))

    for index in range(3):  # K = 4 in the worker's settings
        push(index)
    assert check() == []
    assert registry.call("GET", "/merges", params={"base_id": base["id"]}) == []

    push(3)
    jobs = registry.wait(f"/merges?base_id={base['id']}", lambda jobs: len(jobs) == 1, timeout=120)
    assert jobs[0]["requested_by"] == "system:auto-merge"
    assert len(jobs[0]["selection"]["inputs"]) == 4
    assert check() == []
    assert len(registry.call("GET", "/merges", params={"base_id": base["id"]})) == 1


def test_older_generation_vectors_weighted_by_staleness(
    registry: Registry, world: World, datasets_dir: Path
) -> None:
    first = {"base_id": world.base["id"], "strategy": "weighted_mean"}
    first_job = registry.call("POST", "/merges", json=first)["job_id"]
    merged = registry.wait(f"/merges/{first_job}", _finished)
    new_base = registry.call("POST", f"/versions/{merged['version_id']}/generation")
    base_file = registry.tmp / "generation-1.safetensors"
    download = registry.client.get(
        f"/api/v1/bases/{new_base['id']}/download", headers=registry.headers()
    )
    base_file.write_bytes(download.content)
    fresh = registry.push(
        "hospital-0",
        factories.fine_tuned_vector(
            base_file,
            registry.tmp / "fresh-0.safetensors",
            base_id=new_base["id"],
            base_sha256=new_base["sha256"],
            hospital="hospital-0",
            data=factories.hospital_data(datasets_dir, 0),
        ),
    )
    body = {
        "base_id": new_base["id"],
        "strategy": "weighted_mean",
        "selection": {"stale": "weight", "staleness_power": 1.0},
    }
    job_id = registry.call("POST", "/merges", json=body)["job_id"]
    job = registry.wait(f"/merges/{job_id}", _finished)
    assert job["status"] == "succeeded", job["error"]

    inputs = {i["vector_id"]: (i["staleness"], i["weight"]) for i in job["selection"]["inputs"]}
    assert inputs == {
        fresh["id"]: (0, 96.0),
        world.vectors[1]["id"]: (1, 48.0),  # (1 + 1) ** -1 of its 96 samples
        world.vectors[2]["id"]: (1, 48.0),
    }
    excluded = registry.client.post(
        "/api/v1/merges",
        json={"base_id": new_base["id"], "strategy": "weighted_mean"},
        headers=registry.headers(),
    )
    assert excluded.status_code == 202
    only_fresh = registry.call("GET", f"/merges/{excluded.json()['job_id']}")
    assert [i["vector_id"] for i in only_fresh["selection"]["inputs"]] == [fresh["id"]]


def _download_version(registry: Registry, version_id: str, name: str) -> Path:
    path = registry.tmp / name
    response = registry.client.get(
        f"/api/v1/versions/{version_id}/download", headers=registry.headers()
    )
    assert response.status_code == 200
    path.write_bytes(response.content)
    return path


def _cosine_by_hand(paths: list[Path]) -> float:
    flat = []
    for path in paths:
        tensors, _ = load_vector(path)
        flat.append(
            torch.cat([t.double().ravel() for k, t in tensors.items() if not is_running_stat(k)])
        )
    pairs = [(i, j) for i in range(len(flat)) for j in range(i + 1, len(flat))]
    return sum(float(F.cosine_similarity(flat[i], flat[j], dim=0)) for i, j in pairs) / len(pairs)


def test_merged_version_is_recalibrated_and_records_its_mergeability(
    registry: Registry, world: World
) -> None:
    body = {"base_id": world.base["id"], "strategy": "ties", "params": {"density": 0.4}}
    job_id = registry.call("POST", "/merges", json=body)["job_id"]
    job = registry.wait(f"/merges/{job_id}", _finished)
    assert job["status"] == "succeeded", job["error"]
    bench = world.benchmark["id"]
    assert job["params"]["calibration"] == {"benchmark_id": bench, "split": "val"}
    version = registry.call("GET", f"/versions/{job['version_id']}")
    # ResNet-18: stem, two per basic block (8 blocks), three downsampling shortcuts
    assert version["calibration"] == {
        "benchmark_id": bench,
        "split": "val",
        "images": 300,
        "layers": 20,
    }

    # the same merge without recalibration, by hand: the engine, then recalibrate_bn
    paths = [registry.tmp / f"v-{index}.safetensors" for index in range(3)]
    by_hand = registry.tmp / "ties-by-hand.safetensors"
    merge_files(world.base["path"], paths, by_hand, strategy="ties", params={"density": 0.4})
    stored = _download_version(registry, version["id"], "ties-stored.safetensors")
    model, spec = load_model_file(by_hand)
    val = load_npz(world.benchmark_path, "val", in_channels=3)
    combined = evaluate_model(model, val, device="cpu").accuracy
    record = recalibrate_bn(model, val, device="cpu", batch_size=256)
    recalibrated = evaluate_model(model, val, device="cpu").accuracy
    assert record.layers == 20
    got = load_model_file(stored)[0].state_dict()
    averaged = load_model_file(by_hand)[0].state_dict()
    for key, value in model.state_dict().items():
        if is_running_stat(key):  # recomputed, and not the average the engine wrote
            torch.testing.assert_close(got[key], value, rtol=1e-4, atol=1e-5)
            assert not torch.allclose(got[key], averaged[key])
        elif value.is_floating_point():
            assert torch.equal(got[key], value), key
    assert read_model_provenance(stored)["calibration"]["source"] == bench

    merge = version["mergeability"]
    assert merge["validation_benchmark_id"] == bench
    assert merge["mean_cosine"] == pytest.approx(_cosine_by_hand(paths), rel=1e-6)
    assert merge["val_accuracy_combined"] == pytest.approx(combined, abs=1e-9)
    assert merge["val_accuracy_recalibrated"] == pytest.approx(recalibrated, abs=1 / 300)
    assert merge["val_accuracy_recalibrated"] == pytest.approx(
        factories.accuracy_by_hand(stored, world.benchmark_path, "val")[0], abs=1e-9
    )

    registry.wait(f"/versions/{version['id']}/evaluations", _evaluated({"test"}))
    board = registry.call("GET", "/leaderboard", params={"metric": "accuracy"})
    row = next(r for r in board if r["version_id"] == version["id"])
    assert row["mergeability"] == merge and row["calibration"] == version["calibration"]


def test_calibration_none_keeps_the_averaged_statistics_and_a_bad_source_is_refused(
    registry: Registry, world: World
) -> None:
    ids = [world.vectors[0]["id"], world.vectors[2]["id"]]
    body = {
        "base_id": world.base["id"],
        "strategy": "weighted_mean",
        "selection": {"vector_ids": ids},
        "calibration": "none",
    }
    job_id = registry.call("POST", "/merges", json=body)["job_id"]
    job = registry.wait(f"/merges/{job_id}", _finished)
    assert job["status"] == "succeeded", job["error"]
    version = registry.call("GET", f"/versions/{job['version_id']}")
    assert version["calibration"] is None
    merge = version["mergeability"]
    assert merge["val_accuracy_combined"] is not None
    assert merge["val_accuracy_recalibrated"] is None
    stored = _download_version(registry, version["id"], "none-stored.safetensors")
    assert "calibration" not in read_model_provenance(stored)

    auto = registry.call("POST", "/merges", json={**body, "calibration": "auto"})
    assert auto["job_id"] != job_id  # other bytes, so another job
    unknown = registry.client.post(
        "/api/v1/merges", json={**body, "calibration": "no-such"}, headers=registry.headers()
    )
    assert unknown.status_code == 404, unknown.text
    assert "no benchmark no-such to calibrate on" in unknown.json()["message"]
