"""Workers end to end on real services: PostgreSQL, Redis, a ``celery worker`` process,
real BlobMNIST images and ResNet-18 vectors fine-tuned on them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from sqlalchemy import text
from torch.nn import functional as F

from app.db import make_engine
from app.storage import LocalBlobStore
from app.tasks import MergeRun, PolicyCheck
from medvec.calibration import recalibrate_bn
from medvec.data import load_npz
from medvec.evaluation import evaluate_model
from medvec.hashing import sha256_file
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
            MergeRun.name, kwargs={"job_id": job_id}, queue=settings.queue, ignore_result=False
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
        result = celery.send_task(
            PolicyCheck.name, kwargs={"base_id": base["id"]}, queue=settings.queue
        )
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


def _download(registry: Registry, what: str, record_id: str, name: str) -> Path:
    """The stored file of a base or version (``what``: ``bases`` or ``versions``)."""
    path = registry.tmp / name
    response = registry.client.get(
        f"/api/v1/{what}/{record_id}/download", headers=registry.headers()
    )
    assert response.status_code == 200
    path.write_bytes(response.content)
    return path


def _inputs(job: dict[str, Any]) -> dict[str, tuple[int, float]]:
    return {i["vector_id"]: (i["staleness"], i["weight"]) for i in job["selection"]["inputs"]}


def _assert_inputs(got: dict[str, tuple[int, float]], want: dict[str, tuple[int, float]]) -> None:
    assert {k: s for k, (s, _w) in got.items()} == {k: s for k, (s, _w) in want.items()}
    assert {k: w for k, (_s, w) in got.items()} == pytest.approx(
        {k: w for k, (_s, w) in want.items()}, rel=1e-12
    )


def test_older_generation_vectors_weighted_by_staleness(
    registry: Registry, world: World, datasets_dir: Path, settings: WorkerSettings
) -> None:
    """Three generations of real vectors. A merge weighs a hospital's vector of an older
    generation by samples x (1 + s) ** -a (a as asked, 0.5 by default) and applies it to
    the merged base as it is; a hospital's older vector counts beside a newer one only
    while no version of the lineage has taken it, and a vector of a base outside the
    lineage never. The default auto-merge does the same, and its weights are base + the
    weighted mean of the deltas. A vector made against a version that never became a
    base is refused and nothing is stored."""
    first = {"base_id": world.base["id"], "strategy": "weighted_mean"}
    first_job = registry.call("POST", "/merges", json=first)["job_id"]
    merged = registry.wait(f"/merges/{first_job}", _finished)
    assert merged["status"] == "succeeded", merged["error"]
    new_base = registry.call("POST", f"/versions/{merged['version_id']}/generation")
    base_file = _download(registry, "bases", new_base["id"], "generation-1.safetensors")
    paths = {v["id"]: registry.tmp / f"v-{i}.safetensors" for i, v in enumerate(world.vectors)}

    def fine_tune(name: str, index: int, base: dict[str, Any], file: Path, **ref: str) -> str:
        path = registry.tmp / f"{name}-on-{base['id']}.safetensors"
        factories.fine_tuned_vector(
            file, path, base_id=ref.get("base_id", base["id"]), base_sha256=base["sha256"],
            hospital=name, data=factories.hospital_data(datasets_dir, index), seed=index,
        )  # fmt: skip
        pushed = registry.push(name, path)
        assert (pushed["base_id"], pushed["status"]) == (base["id"], "validated")
        paths[pushed["id"]] = path
        return str(pushed["id"])

    fresh = fine_tune("hospital-0", 0, new_base, base_file)
    one = 1  # generations along the lineage: the world's base is new_base's parent
    body = {
        "base_id": new_base["id"],
        "strategy": "weighted_mean",
        "selection": {"stale": "weight", "staleness_power": 1.0},
    }
    job_id = registry.call("POST", "/merges", json=body)["job_id"]
    job = registry.wait(f"/merges/{job_id}", _finished)
    assert job["status"] == "succeeded", job["error"]
    old_1, old_2 = world.vectors[1]["id"], world.vectors[2]["id"]
    # hospital-0's vector of the first generation is not used: it has a current one, and
    # the first merge (new_base's version) took it
    _assert_inputs(
        _inputs(job),
        {fresh: (0, 96.0), old_1: (one, 96 / (1 + one)), old_2: (one, 96 / (1 + one))},
    )

    # the defaults: stale vectors weighted with a = 0.5; stale = exclude leaves them out
    default_id = registry.call(
        "POST", "/merges", json={"base_id": new_base["id"], "strategy": "weighted_mean"}
    )["job_id"]
    default = registry.call("GET", f"/merges/{default_id}")
    assert (default["selection"]["stale"], default["selection"]["staleness_power"]) == (
        "weight",
        0.5,
    )
    half = 96 * (1 + one) ** -0.5
    _assert_inputs(_inputs(default), {fresh: (0, 96.0), old_1: (one, half), old_2: (one, half)})
    excluded = registry.call("POST", "/merges", json={**body, "selection": {"stale": "exclude"}})[
        "job_id"
    ]
    only_fresh = registry.call("GET", f"/merges/{excluded}")
    assert [i["vector_id"] for i in only_fresh["selection"]["inputs"]] == [fresh]

    # a third generation; hospital-1 then pushes against the second, an older version by
    # now, from the file it pulled (naming its base by sha256, as an offline vector does):
    # accepted. It pulls the third and pushes again before any merge of it: the vector of
    # the second generation, which no version of the lineage has taken, is merged beside
    # the new one, not replaced by it. hospital-2 pushes against a base of the same
    # architecture outside the lineage: accepted, and never merged into it.
    default = registry.wait(f"/merges/{default_id}", _finished)
    assert default["status"] == "succeeded", default["error"]
    third = registry.call("POST", f"/versions/{default['version_id']}/generation")
    third_file = _download(registry, "bases", third["id"], "generation-2.safetensors")
    late = fine_tune("hospital-1", 1, new_base, base_file, base_id=new_base["sha256"])
    again = fine_tune("hospital-1", 1, third, third_file)
    elsewhere = registry.register_base(seed=7)
    outside = fine_tune("hospital-2", 2, elsewhere, elsewhere["path"])
    current = [again] + [fine_tune(f"gen-{i}", i, third, third_file) for i in range(3, 6)]

    # K = 4 vectors of the current base: the worker's auto-merge, with its defaults
    jobs = registry.wait(f"/merges?base_id={third['id']}", lambda jobs: len(jobs) == 1)
    auto = registry.wait(f"/merges/{jobs[0]['id']}", _finished)
    assert auto["status"] == "succeeded", auto["error"]
    assert auto["requested_by"] == "system:auto-merge"
    assert (auto["selection"]["stale"], auto["selection"]["staleness_power"]) == ("weight", 0.5)
    s1, s2 = 1, 2  # along the lineage: new_base is third's parent, the world's base its grandparent
    want = dict.fromkeys(current, (0, 96.0))
    want[fresh] = want[late] = (s1, 96 * (1 + s1) ** -0.5)
    want[old_2] = (s2, 96 * (1 + s2) ** -0.5)
    _assert_inputs(_inputs(auto), want)
    assert outside not in _inputs(auto)
    version = registry.call("GET", f"/versions/{auto['version_id']}")
    assert {i["vector_id"]: i["weight"] for i in version["inputs"]} == pytest.approx(
        {v: w for v, (_s, w) in want.items()}
    )
    assert version["calibration"] is not None  # running statistics recomputed, checked apart

    # the merged weights: the current base plus the weighted mean of the deltas as they are
    stored = _download(registry, "versions", version["id"], "auto-merged.safetensors")
    got, base_state = load_file(stored), load_file(third_file)
    deltas = {v: load_vector(paths[v])[0] for v in want}
    total = sum(w for _s, w in want.values())
    compared = 0
    for key, value in base_state.items():
        if not value.is_floating_point():
            assert torch.equal(got[key], value), key
            continue
        if is_running_stat(key):
            continue
        mean = sum(w * deltas[v][key].double() for v, (_s, w) in want.items()) / total
        torch.testing.assert_close(got[key].double(), value.double() + mean, rtol=1e-5, atol=1e-6)
        compared += 1
    assert compared > 60

    # a vector made against a version that never became a base (the auto-merge's): the
    # registry knows no such base; refused, and neither a row nor a blob is stored
    version_file = stored
    offline = factories.perturbed_vector(
        version_file, registry.tmp / "on-a-version.safetensors", base_id=version["sha256"],
        base_sha256=version["sha256"], hospital="gen-3", seed=11,
    )  # fmt: skip
    before = registry.call("GET", "/vectors", who="gen-3")
    response = registry.client.post(
        "/api/v1/vectors",
        content=offline.read_bytes(),
        headers={**registry.headers("gen-3"), "Content-Type": "application/octet-stream"},
    )
    assert response.status_code == 422, response.text
    body_error = response.json()
    assert body_error["code"] == "unknown_base"
    assert "not registered here" in body_error["message"] and " — " in body_error["message"]
    assert registry.call("GET", "/vectors", who="gen-3") == before
    blobs = LocalBlobStore(settings.data_dir / "blobs").iter_blobs()
    assert sha256_file(offline) not in blobs


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
    stored = _download(registry, "versions", version["id"], "ties-stored.safetensors")
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
    stored = _download(registry, "versions", version["id"], "none-stored.safetensors")
    assert "calibration" not in read_model_provenance(stored)

    auto = registry.call("POST", "/merges", json={**body, "calibration": "auto"})
    assert auto["job_id"] != job_id  # other bytes, so another job
    unknown = registry.client.post(
        "/api/v1/merges", json={**body, "calibration": "no-such"}, headers=registry.headers()
    )
    assert unknown.status_code == 404, unknown.text
    assert "no benchmark no-such to calibrate on" in unknown.json()["message"]
