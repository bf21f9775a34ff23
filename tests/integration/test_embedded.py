"""The embedded default: no Redis, SQLite in a data directory, and a real Celery worker
thread in the registry's own process running the same tasks (``worker.embedded``).

It runs ``medvec-server serve --worker`` as its own process, exactly as a user (and
``medvec demo``) starts it: Celery keeps its task registry per process, so one
embedded worker per process is the supported shape (see docs/workers.md).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from hospital_cli.demo.server import embedded_registry
from tests.integration import factories

API = "/api/v1"
#: the vectors here are seeded noise, which screening would quarantine
NO_SCREENING = {"MEDVEC_SCREENING_ENABLED": "false"}


def _await_ready(client: httpx.Client, base_id: str, headers: dict[str, str]) -> None:
    """The embedded worker verifies a new base before it takes vectors."""
    deadline = time.monotonic() + 120
    status = "verifying"
    while status == "verifying":
        assert time.monotonic() < deadline, "the base was not verified in 120 s"
        time.sleep(0.2)
        status = client.get(f"{API}/bases/{base_id}", headers=headers).json()["status"]
    assert status == "ready"


def _add_base(client: httpx.Client, base_file: Path, admin: dict[str, str]) -> dict[str, Any]:
    """Register ``base_file`` and wait until the embedded worker has verified it."""
    base = client.post(
        f"{API}/bases",
        params={"name": "b"},
        content=base_file.read_bytes(),
        headers={**admin, "Content-Type": "application/octet-stream"},
    ).json()
    _await_ready(client, base["id"], admin)
    return dict(base)


def _push_from_new_hospital(
    client: httpx.Client,
    admin: dict[str, str],
    base_file: Path,
    base: dict[str, Any],
    name: str,
    seed: int,
) -> None:
    """A new hospital ``name`` with its own token pushes a seeded perturbation of the base."""
    hospital = client.post(f"{API}/hospitals", json={"name": name}, headers=admin)
    token = client.post(
        f"{API}/tokens",
        json={"name": name, "role": "hospital", "hospital_id": hospital.json()["id"]},
        headers=admin,
    ).json()["token"]
    vector = factories.perturbed_vector(
        base_file,
        base_file.parent / f"{name}.safetensors",
        base_id=base["id"],
        base_sha256=base["sha256"],
        hospital=name,
        seed=seed,
    )
    pushed = client.post(
        f"{API}/vectors",
        content=vector.read_bytes(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/octet-stream"},
    )
    assert pushed.status_code == 201, pushed.text


def test_embedded_worker_merges_without_any_external_service(tmp_path: Path) -> None:
    with (
        embedded_registry(tmp_path / "data", auto_merge_k=1000, extra_env=NO_SCREENING) as registry,
        httpx.Client(base_url=registry.url, timeout=60.0) as client,
    ):
        headers = {"Authorization": f"Bearer {registry.admin_token}"}
        base_file = factories.make_base(tmp_path / "base.safetensors", seed=5)
        base = _add_base(client, base_file, headers)
        for index in range(2):
            _push_from_new_hospital(client, headers, base_file, base, f"e{index}", seed=index)

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


def _evaluations(client: httpx.Client, version_id: str) -> dict[str, dict[str, Any]]:
    rows = client.get(f"{API}/versions/{version_id}/evaluations")
    assert rows.status_code == 200, rows.text
    return {row["split"]: row for row in rows.json()}


def _poll(check: Callable[[], Any], timeout: float, poll: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, f"not reached within {timeout} s"
        time.sleep(poll)
    return found


@pytest.mark.slow  # two server processes, each with its worker, and a real evaluation
def test_server_killed_mid_evaluation_finishes_it_after_restart(
    tmp_path: Path, datasets_dir: Path
) -> None:
    """kill -9 of ``medvec-server serve --worker`` while it evaluates a merged version: the
    in-memory queue is gone, the row says ``running``; the restarted server sends it again
    and it completes, its two deliveries counted, with one version for the merge."""
    data = tmp_path / "data"
    with (
        embedded_registry(data, auto_merge_k=1000, extra_env=NO_SCREENING) as first,
        httpx.Client(base_url=first.url, timeout=60.0) as client,
    ):
        admin = {"Authorization": f"Bearer {first.admin_token}"}
        client.headers.update(admin)
        raw = {"Content-Type": "application/octet-stream"}
        base_file = factories.make_base(tmp_path / "base.safetensors", seed=7)
        base = _add_base(client, base_file, admin)
        bench_file = factories.make_benchmark(datasets_dir, tmp_path / "bench.npz")
        bench = client.post(
            f"{API}/benchmarks",
            params={"name": "blood"},
            content=bench_file.read_bytes(),
            headers=raw,
        )
        assert bench.status_code == 201, bench.text
        for index in range(2):
            _push_from_new_hospital(client, admin, base_file, base, f"k{index}", seed=index)
        body = {
            "base_id": base["id"],
            "strategy": "weighted_mean",
            "benchmark_id": bench.json()["id"],
        }
        job_id = client.post(f"{API}/merges", json=body).json()["job_id"]

        def merged() -> Any:
            job = client.get(f"{API}/merges/{job_id}").json()
            assert job["status"] in ("queued", "running", "succeeded"), job["error"]
            return job if job["status"] == "succeeded" else None

        version_id = _poll(merged, timeout=300)["version_id"]
        running = _poll(
            lambda: _evaluations(client, version_id).get("test", {}).get("status") == "running",
            timeout=120,
            poll=0.05,
        )
        assert running
        os.killpg(first.pid, signal.SIGKILL)

    with (
        embedded_registry(
            data, auto_merge_k=1000, admin_token=first.admin_token, extra_env=NO_SCREENING
        ) as second,
        httpx.Client(base_url=second.url, timeout=60.0) as client,
    ):
        client.headers.update(admin)
        test = _poll(
            lambda: (
                (row := _evaluations(client, version_id)["test"])["status"]
                in ("completed", "failed")
                and row
            ),
            timeout=300,
            poll=0.5,
        )
        assert test["status"] == "completed", test["error"]
        assert test["attempts"] == 2 and test["metrics"]["n"] == 1000
        job = client.get(f"{API}/merges/{job_id}").json()
        assert job["status"] == "succeeded" and job["version_id"] == version_id
        versions = client.get(f"{API}/versions").json()
        assert [v["id"] for v in versions] == [version_id]
