"""What every fault test works on, and what it asserts after each kill and restart.

A :class:`Fleet` is a running registry (``medvec-server serve``, a real process) with a
base, a benchmark of real BloodMNIST images and hospitals, plus whatever else the world
runs (a Celery worker, beat, Redis). :meth:`Fleet.assert_recovered` is the suite's
contract, checked after every kill:

- every vector the registry accepted (answered 2xx for) is stored once;
- one current (``validated``) vector per hospital and base;
- every version has its inputs, and they are the inputs its merge job selected;
- no blob without its row and no row without its blob (``medvec-server fsck``'s check,
  with every sha256 re-verified);
- every merge job succeeded and every evaluation completed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from app.models import (
    DataVector,
    Evaluation,
    EvaluationStatus,
    JobStatus,
    MergeJob,
    ModelVersion,
    VectorStatus,
    VersionInput,
)
from app.services.integrity import Finding, check
from app.storage import LocalBlobStore, sharded
from hospital_cli.client import RegistryClient
from hospital_cli.secure import DEFAULT_MAX_NORM, ShareHolderClient, prepare_shares, push_pair
from hospital_cli.uploads import ResumeStore, Uploader
from medvec.hashing import sha256_file
from tests.integration import factories
from tests.servers import ServerProcess, ShareHolderProcess

OCTET = {"Content-Type": "application/octet-stream"}
#: how long a job or evaluation may take to finish after a restart (patience, not a target)
FINISH_TIMEOUT_S = 300.0


@dataclass
class Fleet:
    server: ServerProcess
    engine: Engine
    admin_token: str
    tmp: Path
    base: dict[str, Any] = field(default_factory=dict)
    base_path: Path | None = None
    benchmark: dict[str, Any] = field(default_factory=dict)
    hospitals: dict[str, str] = field(default_factory=dict)
    accepted: set[tuple[str, str]] = field(default_factory=set)
    seeds: Iterator[int] = field(default_factory=lambda: iter(range(1, 10_000)))
    verified: set[str] = field(default_factory=set)
    """blobs whose bytes a check re-hashed already"""
    holder: ShareHolderProcess | None = None
    """the share holder of secure merges, in a world that runs one"""
    holder_tokens: dict[str, str] = field(default_factory=dict)

    def staging(self) -> Path:
        """The blob store's staging area (bodies being received, upload parts)."""
        return Path(self.server.env["MEDVEC_DATA_DIR"]) / "blobs" / "staging"

    def blob_path(self, sha256: str) -> Path:
        """Where the local blob store keeps ``sha256``'s blob."""
        blobs = Path(self.server.env["MEDVEC_DATA_DIR"]) / "blobs" / "sha256"
        return blobs / sharded(sha256)

    def has_vector(self, sha256: str) -> bool:
        """Whether a vector row with these bytes is committed."""
        query = select(func.count()).where(DataVector.sha256 == sha256)
        with self.engine.connect() as connection:
            return bool(connection.scalar(query.select_from(DataVector)))

    def admin(self) -> httpx.Client:
        return self.server.client(self.admin_token)

    def hospital(self, name: str) -> httpx.Client:
        """A client with ``name``'s token (the hospital is created on first use)."""
        if name not in self.hospitals:
            with self.admin() as admin:
                created = admin.post("/hospitals", json={"name": name})
                assert created.status_code == 201, created.text
                body = {"name": name, "role": "hospital", "hospital_id": created.json()["id"]}
                token = admin.post("/tokens", json=body)
                assert token.status_code == 201, token.text
            self.hospitals[name] = token.json()["token"]
        return self.server.client(self.hospitals[name])

    def setup(self, datasets_dir: Path) -> None:
        """Register the base and the benchmark (its test and val splits)."""
        self.base_path = factories.make_base(self.tmp / "base.safetensors", seed=1)
        bench = factories.make_benchmark(datasets_dir, self.tmp / "bench.npz", 200, 100)
        with self.admin() as admin:
            base = admin.post(
                "/bases",
                params={"name": "fault-base"},
                content=self.base_path.read_bytes(),
                headers=OCTET,
            )
            assert base.status_code == 201, base.text
            base_url = f"/bases/{base.json()['id']}"
            self.poll("the base's verification", lambda: self._base_status(base_url) != "verifying")
            self.base = admin.get(base_url).json()
            assert self.base["status"] == "ready", self.base
            benchmark = admin.post(
                "/benchmarks", params={"name": "blood"}, content=bench.read_bytes(), headers=OCTET
            )
            assert benchmark.status_code == 201, benchmark.text
            self.benchmark = benchmark.json()

    def vector_file(self, hospital: str) -> Path:
        """A new valid vector of ``hospital`` against the base (distinct bytes each call)."""
        assert self.base_path is not None
        seed = next(self.seeds)
        return factories.perturbed_vector(
            self.base_path,
            self.tmp / f"{hospital}-{seed}.safetensors",
            base_id=self.base["id"],
            base_sha256=self.base["sha256"],
            hospital=hospital,
            seed=seed,
        )

    def record(self, response: httpx.Response) -> dict[str, Any]:
        """Note a vector the registry accepted (2xx) and return its body."""
        assert response.status_code in (200, 201), response.text
        body = dict(response.json())
        self.accepted.add((body["hospital_id"], body["sha256"]))
        return body

    def push(self, hospital: str, path: Path | None = None) -> dict[str, Any]:
        with self.hospital(hospital) as client:
            data = (path or self.vector_file(hospital)).read_bytes()
            return self.record(client.post("/vectors", content=data, headers=OCTET))

    def push_secure(self, hospital: str) -> dict[str, Any]:
        """A new vector of ``hospital`` split into two shares and pushed as ``medvec push
        --secure`` pushes it (share B to the share holder, then share A to the registry);
        the registry's share record, and the vector file."""
        assert self.holder is not None, "this world runs no share holder"
        vector = self.vector_file(hospital)
        self.hospital(hospital).close()  # the hospital and its registry token
        if hospital not in self.holder_tokens:
            self.holder_tokens[hospital] = self.holder.mint(hospital, "hospital")
        cache = self.tmp / "shares"
        pair = prepare_shares(
            vector, sha256_file(vector), cache, noise=None, max_norm=DEFAULT_MAX_NORM
        )
        resume = ResumeStore(self.tmp / "uploads")
        with (
            ShareHolderClient(self.holder.url, self.holder_tokens[hospital]) as to_holder,
            RegistryClient(self.server.url, self.hospitals[hospital]) as to_registry,
        ):
            pushed = push_pair(pair, Uploader(to_holder, resume), Uploader(to_registry, resume))
        share = dict(pushed["registry"]["vector"])
        self.accepted.add((share["hospital_id"], share["sha256"]))
        return {**share, "vector_path": vector}

    def secure_merge(self, share_ids: list[str]) -> str:
        """Ask for the secure weighted mean of these shares; the job's id."""
        body = {
            "strategy": "weighted_mean",
            "vector_ids": share_ids,
            "benchmark_id": self.benchmark["id"],
            "calibration": "none",
        }
        with self.admin() as admin:
            response = admin.post("/secure/merges", json=body)
        assert response.status_code == 202, response.text
        return str(response.json()["job_id"])

    def job(self, job_id: str) -> MergeJob:
        with Session(self.engine, expire_on_commit=False) as session:
            row = session.get(MergeJob, job_id)
        assert row is not None
        return row

    def merge(self, vector_ids: list[str], **params: Any) -> str:
        body = {
            "base_id": self.base["id"],
            "strategy": "task_arithmetic",
            "params": {"lambda": 0.5, **params},
            "selection": {"vector_ids": vector_ids},
            "benchmark_id": self.benchmark["id"],
            "calibration": "none",  # the kills are the point, not the BatchNorm statistics
        }
        with self.admin() as admin:
            response = admin.post("/merges", json=body)
        assert response.status_code == 202, response.text
        return str(response.json()["job_id"])

    def _base_status(self, url: str) -> str:
        with self.admin() as admin:
            return str(admin.get(url).json()["status"])

    def poll(self, what: str, ready: Callable[[], bool], poll_s: float = 0.05) -> None:
        """Wait until ``ready()``; fail with ``what`` after :data:`FINISH_TIMEOUT_S`."""
        deadline = time.monotonic() + FINISH_TIMEOUT_S
        while not ready():
            if time.monotonic() > deadline:
                raise AssertionError(f"still waiting for {what} after {FINISH_TIMEOUT_S} s")
            time.sleep(poll_s)

    def job_status(self, job_id: str) -> JobStatus:
        with self.engine.connect() as connection:
            status = connection.scalar(select(MergeJob.status).where(MergeJob.id == job_id))
        assert status is not None
        return JobStatus(status)

    def evaluations(self, status: EvaluationStatus) -> int:
        query = select(func.count()).select_from(Evaluation).where(Evaluation.status == status)
        with self.engine.connect() as connection:
            return int(connection.scalar(query) or 0)

    def unfinished(self) -> tuple[int, int]:
        """(merge jobs queued or running, evaluations queued or running or not queued yet).

        A merge job succeeds in one commit and its version's evaluations are queued in the
        next (``worker.runner.queue_evaluations``), so a version without an evaluation row
        is an evaluation still to come: counting only the queued rows once saw nothing
        left to do in between, and an evaluation queued a moment later."""
        busy_jobs = select(func.count()).where(
            MergeJob.status.in_([JobStatus.QUEUED, JobStatus.RUNNING])
        )
        busy_evals = select(func.count()).where(
            Evaluation.status.in_([EvaluationStatus.QUEUED, EvaluationStatus.RUNNING])
        )
        unevaluated = select(func.count()).where(
            ~select(Evaluation.id).where(Evaluation.version_id == ModelVersion.id).exists()
        )
        with self.engine.connect() as connection:
            jobs = int(connection.scalar(busy_jobs.select_from(MergeJob)) or 0)
            evals = int(connection.scalar(busy_evals.select_from(Evaluation)) or 0)
            evals += int(connection.scalar(unevaluated.select_from(ModelVersion)) or 0)
        return jobs, evals

    def fsck(self) -> dict[str, Any]:
        """The report of ``medvec-server fsck --verify-hashes --grace 0`` on this registry,
        run in this process (the command itself is tested in ``tests/api/test_fsck.py``).

        Blobs are immutable once renamed into place, so each is re-hashed once, the first
        time a check sees it, rather than every blob after every kill."""
        store = LocalBlobStore(Path(self.server.env["MEDVEC_DATA_DIR"]) / "blobs")
        with Session(self.engine) as session:
            report = check(session, store, grace_s=0)
        for sha256 in sorted(set(store.iter_blobs()) - self.verified):
            actual = sha256_file(store.local_path(sha256))
            if actual != sha256:
                report.problems.append(
                    Finding("hash_mismatch", f"blob {sha256} hashes to {actual}", sha256)
                )
            self.verified.add(sha256)
        return report.as_dict()

    def assert_recovered(self) -> None:
        """The suite's contract after a kill and a restart (see the module docstring)."""
        self.poll("every job and evaluation to finish", lambda: self.unfinished() == (0, 0), 0.5)
        with self.engine.connect() as connection:
            stored = connection.execute(
                select(DataVector.hospital_id, DataVector.sha256, func.count()).group_by(
                    DataVector.hospital_id, DataVector.sha256
                )
            ).all()
            current = connection.execute(
                select(DataVector.hospital_id, DataVector.base_id, func.count())
                .where(DataVector.status == VectorStatus.VALIDATED)
                .group_by(DataVector.hospital_id, DataVector.base_id)
            ).all()
            jobs = connection.execute(
                select(
                    MergeJob.id,
                    MergeJob.status,
                    MergeJob.error,
                    MergeJob.selection,
                    MergeJob.version_id,
                )
            ).all()
            versions = connection.scalars(select(ModelVersion.id)).all()
            inputs = connection.execute(
                select(VersionInput.version_id, VersionInput.vector_id)
            ).all()
            evaluations = connection.execute(select(Evaluation.status, Evaluation.error)).all()
        counts = {(hospital, sha): n for hospital, sha, n in stored}
        assert {key: counts.get(key, 0) for key in self.accepted} == dict.fromkeys(self.accepted, 1)
        assert all(n == 1 for *_, n in current), current
        lineage: dict[str, set[str]] = {}
        for version_id, vector_id in inputs:
            lineage.setdefault(version_id, set()).add(vector_id)
        assert all(lineage.get(v) for v in versions), "a version without its inputs"
        for job_id, status, error, selection, version_id in jobs:
            assert status == JobStatus.SUCCEEDED, f"merge job {job_id}: {status} {error}"
            wanted = {i["vector_id"] for i in selection["inputs"]}
            assert lineage[version_id] == wanted, f"version {version_id} of job {job_id}"
        assert len(versions) == len({j.version_id for j in jobs}), "a job made two versions"
        assert all(s == EvaluationStatus.COMPLETED for s, _ in evaluations), evaluations
        report = self.fsck()
        assert report["problems"] == [], report
