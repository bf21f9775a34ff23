"""The embedded default: no Redis, SQLite in a data directory, and a real Celery worker
thread in the registry's own process running the same tasks (``worker.embedded``).

It runs ``medvec-server serve --worker`` as its own process, exactly as a user (and
``medvec demo``) starts it: Celery keeps its task registry per process, so one
embedded worker per process is the supported shape (see docs/workers.md).
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from hospital_cli.demo.server import embedded_registry
from tests.integration import factories

API = "/api/v1"


def test_embedded_worker_merges_without_any_external_service(tmp_path: Path) -> None:
    with (
        embedded_registry(tmp_path / "data", auto_merge_k=1000) as registry,
        httpx.Client(base_url=registry.url, timeout=60.0) as client,
    ):
        admin = registry.admin_token
        headers = {"Authorization": f"Bearer {admin}"}
        raw = {**headers, "Content-Type": "application/octet-stream"}
        base_file = factories.make_base(tmp_path / "base.safetensors", seed=5)
        base = client.post(
            f"{API}/bases", params={"name": "b"}, content=base_file.read_bytes(), headers=raw
        ).json()
        for index in range(2):
            name = f"e{index}"
            hospital = client.post(f"{API}/hospitals", json={"name": name}, headers=headers)
            token = client.post(
                f"{API}/tokens",
                json={"name": name, "role": "hospital", "hospital_id": hospital.json()["id"]},
                headers=headers,
            ).json()["token"]
            vector = factories.perturbed_vector(
                base_file,
                tmp_path / f"{name}.safetensors",
                base_id=base["id"],
                base_sha256=base["sha256"],
                hospital=name,
                seed=index,
            )
            pushed = client.post(
                f"{API}/vectors",
                content=vector.read_bytes(),
                headers={"Authorization": f"Bearer {token}", "Content-Type": raw["Content-Type"]},
            )
            assert pushed.status_code == 201, pushed.text

        accepted = client.post(
            f"{API}/merges", json={"base_id": base["id"], "strategy": "median"}, headers=headers
        )
        assert accepted.status_code == 202, accepted.text
        job_id = accepted.json()["job_id"]
        deadline = time.monotonic() + 180
        while (job := client.get(f"{API}/merges/{job_id}", headers=headers).json())["status"] in (
            "queued",
            "running",
        ):
            assert time.monotonic() < deadline, job
            time.sleep(0.2)
        assert job["status"] == "succeeded", job["error"]
        version = client.get(f"{API}/versions/{job['version_id']}", headers=headers).json()
        assert version["strategy"] == "median" and len(version["inputs"]) == 2
