"""The registry deployed as on several machines: a ``medvec-server serve`` process and a
``celery worker`` process with their own data directories, sharing only PostgreSQL,
Redis and an S3 bucket (a real moto server over HTTP) — and, as processes of one
machine, the Prometheus multiprocess directory. Uploads, a merge that the worker reads
from S3, its evaluation, promotion and download all go through them; then ``/metrics``
must say exactly what happened."""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.db import make_engine
from app.schema import upgrade
from hospital_cli.demo.server import free_port
from medvec.hashing import sha256_file
from medvec.tokens import mint_token
from tests.api.helpers import OCTET, resumable_push
from tests.integration import factories
from tests.integration.conftest import _worker_env
from tests.integration.services import fresh_postgres_database, fresh_redis_database
from tests.s3server import S3Server
from tests.servers import ServerProcess, WorkerProcess
from worker.config import WorkerSettings

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]

API = "/api/v1"


@dataclass
class Deployment:
    url: str
    admin_token: str
    metrics_token: str
    bucket: str
    s3: Any
    api_dir: Path
    worker_dir: Path
    tmp: Path
    worker_metrics_url: str

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token or self.admin_token}"}
        return httpx.Client(base_url=self.url + API, headers=headers, timeout=300)

    def keys(self) -> list[str]:
        listed = self.s3.list_objects_v2(Bucket=self.bucket, Prefix="blobs/sha256/")
        return sorted(item["Key"].rsplit("/", 1)[-1] for item in listed.get("Contents", []))


@pytest.fixture(scope="module")
def deployment(
    tmp_path_factory: pytest.TempPathFactory, s3_server: S3Server
) -> Iterator[Deployment]:
    bucket = s3_server.new_bucket()
    metrics_dir = tmp_path_factory.mktemp("prometheus")
    api_dir, worker_dir = tmp_path_factory.mktemp("api"), tmp_path_factory.mktemp("worker")
    admin_token, metrics_token = mint_token(), secrets.token_urlsafe(16)
    with fresh_postgres_database() as database_url, fresh_redis_database() as redis_url:
        settings = WorkerSettings(
            environment="test",
            data_dir=worker_dir,
            database_url=database_url,
            redis_url=redis_url,
            queue=f"medvec-deploy-{secrets.token_hex(4)}",
        )
        engine = make_engine(database_url)
        upgrade(engine)  # `medvec-server migrate`, once, before the API starts
        engine.dispose()
        shared = {
            **s3_server.env(),
            "MEDVEC_BLOB_URL": f"s3://{bucket}/blobs",
            "MEDVEC_METRICS_DIR": str(metrics_dir),
        }
        worker_env = _worker_env(settings, shared)
        worker_env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        worker_metrics_port = free_port()
        worker = WorkerProcess(
            {**worker_env, "MEDVEC_METRICS_PORT": str(worker_metrics_port)},
            tmp_path_factory.mktemp("worker-logs"),
            settings.queue,
        )
        api_env = {
            **worker_env,
            "MEDVEC_DATA_DIR": str(api_dir),
            "MEDVEC_BOOTSTRAP_ADMIN_TOKEN": admin_token,
            "MEDVEC_METRICS_TOKEN": metrics_token,
        }
        api = ServerProcess(api_env, tmp_path_factory.mktemp("api-logs"), worker=False)
        try:
            api.launch()
            worker.start(timeout=900)  # a loaded machine starts it slowly
            api.wait_until(api.ready, timeout=900)
            yield Deployment(
                api.url, admin_token, metrics_token, bucket, s3_server.client(),
                api_dir, worker_dir, tmp_path_factory.mktemp("files"),
                f"http://127.0.0.1:{worker_metrics_port}/metrics",
            )  # fmt: skip
        finally:
            api.stop(grace=60)
            worker.stop()


def _post_file(client: httpx.Client, path: str, file: Path, **params: Any) -> Any:
    with file.open("rb") as body:
        response = client.post(path, content=body, headers=OCTET, params=params)
    assert response.status_code == 201, response.text
    return response.json()


def _hospital(deployment: Deployment) -> tuple[str, str]:
    """A new hospital: (name, token)."""
    name = f"hospital-{secrets.token_hex(3)}"
    with deployment.client() as admin:
        record = admin.post("/hospitals", json={"name": name}).json()
        body = {"name": f"{name}-token", "role": "hospital", "hospital_id": record["id"]}
        return name, str(admin.post("/tokens", json=body).json()["token"])


def _finished(job: Any) -> bool:
    return job["status"] in ("succeeded", "failed")


def _evaluated(rows: Any) -> bool:
    return {r["split"] for r in rows if r["status"] == "completed"} >= {"test", "val"}


def _wait(client: httpx.Client, path: str, done: Any, timeout: float = 600) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        body = client.get(path).json()
        if done(body):
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"GET {path} still {body}")
        time.sleep(1)


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_uploads_merge_evaluation_through_s3_and_metrics_count_them(
    deployment: Deployment, datasets_dir: Path
) -> None:
    tmp = deployment.tmp
    base_file = factories.make_base(tmp / "base.safetensors", 3)
    bench_file = factories.make_benchmark(datasets_dir, tmp / "bench.npz", 200, 100)
    with deployment.client() as admin:
        base = _post_file(admin, "/bases", base_file, name="blood-base")
        base = _wait(admin, f"/bases/{base['id']}", lambda b: b["status"] == "ready")
        benchmark = _post_file(admin, "/benchmarks", bench_file, name="blood-200")

    vectors = []
    for index in range(2):
        name, token = _hospital(deployment)
        path = factories.perturbed_vector(
            base_file, tmp / f"v{index}.safetensors", base_id=base["id"],
            base_sha256=base["sha256"], hospital=name, seed=index,
        )  # fmt: skip
        with deployment.client(token) as client:
            if index == 0:
                vectors.append(_post_file(client, "/vectors", path))
            else:  # resumable: 8 MiB parts become S3 parts
                done = resumable_push(client, path, part=8 << 20)
                assert done.status_code == 201, done.text
                vectors.append(done.json())
            if index == 0:  # one refused upload: not a safetensors file
                refused = client.post("/vectors", content=b"not a vector" * 100, headers=OCTET)
                assert refused.status_code == 422
                refused_code = refused.json()["code"]

    with deployment.client() as admin:
        body = {"base_id": base["id"], "strategy": "weighted_mean", "benchmark_id": benchmark["id"]}
        job = admin.post("/merges", json=body).json()
        job = _wait(
            admin, f"/merges/{job['job_id']}", lambda j: j["status"] in ("succeeded", "failed")
        )
        assert job["status"] == "succeeded", job["error"]
        version_id = job["version_id"]
        rows = _wait(
            admin,
            f"/versions/{version_id}/evaluations",
            lambda rows: (
                {r["split"] for r in rows if r["status"] == "completed"} >= {"test", "val"}
            ),
        )
        test_accuracy = next(r for r in rows if r["split"] == "test")["metrics"]["accuracy"]
        promoted = admin.post(f"/versions/{version_id}/promote", json={"stage": "production"})
        assert promoted.status_code == 200, promoted.text
        version = admin.get(f"/versions/{version_id}").json()
        download = admin.get(f"/versions/{version_id}/download")
    model = tmp / "merged.safetensors"
    model.write_bytes(download.content)
    assert sha256_file(model) == version["sha256"] == download.headers["X-Content-SHA256"]

    # every blob is in the bucket; neither machine keeps blobs of its own, and the worker
    # read the base and the vectors from S3 into its cache
    blobs = {base["sha256"], benchmark["sha256"], version["sha256"]}
    blobs |= {v["sha256"] for v in vectors}
    assert deployment.keys() == sorted(blobs)
    for machine in (deployment.api_dir, deployment.worker_dir):
        assert not (machine / "blobs" / "sha256").exists()
    cached = {p.name for p in (deployment.worker_dir / "blobs" / "cache").rglob("*") if p.is_file()}
    assert {base["sha256"], *(v["sha256"] for v in vectors)} <= cached

    # what the scraper sees: the API's and the worker's processes added up, and the gauges
    denied = httpx.get(deployment.url + "/metrics")
    assert denied.status_code == 401 and denied.json()["code"] == "unauthenticated"
    scraped = httpx.get(
        deployment.url + "/metrics",
        headers={"Authorization": f"Bearer {deployment.metrics_token}"},
    )
    assert scraped.status_code == 200
    assert scraped.headers["content-type"].startswith("text/plain")
    samples = _samples(scraped.text)

    def value(name: str, **labels: str) -> float:
        return samples.get((name, frozenset(labels.items())), 0.0)

    assert value("medvec_uploads_total", kind="vector") == 2
    assert value("medvec_uploads_total", kind="base") == 1
    assert value("medvec_uploads_total", kind="benchmark") == 1
    vector_bytes = sum(v["size"] for v in vectors)
    assert value("medvec_upload_bytes_total", kind="vector") == vector_bytes
    assert value("medvec_upload_bytes_total", kind="base") == base_file.stat().st_size
    assert value("medvec_upload_rejections_total", code=refused_code) == 1
    assert value("medvec_merge_duration_seconds_count", strategy="weighted_mean") == 1
    assert value("medvec_merge_duration_seconds_sum", strategy="weighted_mean") > 0
    assert value("medvec_evaluation_duration_seconds_count", split="test") == 1
    assert value("medvec_vectors", status="validated") == 2
    assert value("medvec_vectors", status="superseded") == 0
    assert value("medvec_queue_depth", kind="merge") == 0
    assert value("medvec_queue_depth", kind="evaluation") == 0
    assert value(
        "medvec_production_accuracy",
        version_id=version_id, benchmark_id=benchmark["id"], split="test",
    ) == test_accuracy  # fmt: skip
    assert value("medvec_job_failures_total", task="medvec.merge.run") == 0

    # a worker machine without an API process serves the same counters itself
    from_worker = _samples(httpx.get(deployment.worker_metrics_url).text)
    key = ("medvec_merge_duration_seconds_count", frozenset({("strategy", "weighted_mean")}))
    assert from_worker[key] == 1


def test_a_merge_whose_vector_left_the_bucket_fails_and_is_counted(
    deployment: Deployment,
) -> None:
    tmp = deployment.tmp
    base_file = factories.make_base(tmp / "base-2.safetensors", 4)
    with deployment.client() as admin:
        base = _post_file(admin, "/bases", base_file, name="lonely-base")
        base = _wait(admin, f"/bases/{base['id']}", lambda b: b["status"] == "ready")
    name, token = _hospital(deployment)
    path = factories.perturbed_vector(
        base_file, tmp / "lost.safetensors", base_id=base["id"], base_sha256=base["sha256"],
        hospital=name, seed=7,
    )  # fmt: skip
    with deployment.client(token) as client:
        vector = _post_file(client, "/vectors", path)
    sha = vector["sha256"]
    deployment.s3.delete_object(
        Bucket=deployment.bucket, Key=f"blobs/sha256/{sha[:2]}/{sha[2:4]}/{sha}"
    )
    with deployment.client() as admin:
        job = admin.post("/merges", json={"base_id": base["id"], "strategy": "weighted_mean"})
        assert job.status_code in (200, 201, 202), job.text
        job = _wait(
            admin,
            f"/merges/{job.json()['job_id']}",
            lambda j: j["status"] in ("succeeded", "failed"),
        )
    assert job["status"] == "failed" and sha in job["error"]
    scraped = httpx.get(
        deployment.url + "/metrics",
        headers={"Authorization": f"Bearer {deployment.metrics_token}"},
    )
    samples = _samples(scraped.text)
    key = ("medvec_job_failures_total", frozenset({("task", "medvec.merge.run")}))
    assert samples[key] == 1
