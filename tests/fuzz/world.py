"""What the fuzzer works on: a registry and a share holder as real processes, holding real
data, so that requests reach the services' logic and not only their 404s.

:func:`secure_world` starts the share holder (``medvec-aggregator``) and the registry
(``medvec-server serve``, with the share holder configured) and seeds them the way their
users would, through their APIs and the hospital CLI's own code: a tiny base and a
benchmark of real BloodMNIST images; K hospitals that fine-tune on their own images and
push both plainly and with the secure path (share B to the share holder, share A to the
registry); a plain merge and a secure merge (for which the registry's worker asks the
share holder for a sum); open upload sessions on both servers; and a spare hospital and
token that the admin may delete. The registry then restarts without a worker, so that
what the fuzzer asks for stays queued and every run sees the same world.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from hospital_cli.client import RegistryClient
from hospital_cli.secure import DEFAULT_MAX_NORM, ShareHolderClient, prepare_shares, push_pair
from hospital_cli.uploads import ResumeStore, Uploader
from medvec.hashing import sha256_file
from medvec.tokens import mint_token
from tests.cli.tiny import make_base
from tests.integration.factories import fine_tuned_vector, hospital_data, make_benchmark
from tests.integration.services import fresh_postgres_database
from tests.servers import ServerProcess, ShareHolderProcess, registry_env

#: K: the fewest shares a secure merge sums (the registry's and the share holder's default)
K = 3
#: how long seeding may wait for the registry's worker (patience, not a target)
SEED_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class Hospital:
    id: str
    name: str
    token: str
    token_id: str
    holder_token: str


@dataclass(frozen=True)
class SecureWorld:
    """The two servers, the tokens to call them with, and the ids of what they hold by
    the name of the parameter they fill (``base_id``, ``vector_id`` ...)."""

    registry: ServerProcess
    holder: ShareHolderProcess
    admin: str
    holder_registry_token: str
    hospital: Hospital
    registry_ids: dict[str, list[str]]
    holder_ids: dict[str, list[str]]
    pair_ids: list[str]
    """the pair ids of the shares B the share holder holds (a sum's members)"""


@contextlib.contextmanager
def secure_world(folder: Path, datasets_dir: Path, backend: str) -> Iterator[SecureWorld]:
    """The seeded world on ``backend``: ``sqlite``, both servers' embedded defaults, or
    ``postgres``, a fresh PostgreSQL database for each."""
    with contextlib.ExitStack() as stack:
        urls: dict[str, str | None] = {"registry": None, "holder": None}
        if backend == "postgres":
            urls = {name: stack.enter_context(fresh_postgres_database()) for name in urls}
        holder = ShareHolderProcess(folder / "holder", folder, database_url=urls["holder"])
        stack.callback(holder.stop)
        holder.start()
        holder_registry_token = holder.mint("registry", "registry")
        admin = mint_token()
        settings = {
            "auto_migrate": "true",
            "share_holder_url": holder.url,
            "share_holder_token": holder_registry_token,
            "secure_min_set_size": str(K),
        }
        if urls["registry"]:
            settings["database_url"] = urls["registry"]
        env = registry_env(folder / "registry", admin, **settings)
        registry = ServerProcess(env, folder, worker=True, tiny_models=True)
        stack.callback(registry.stop)
        registry.start()
        world = _seed(registry, holder, admin, holder_registry_token, folder, datasets_dir)
        registry.stop()
        registry.worker = False
        registry.start()
        yield world


def _seed(
    registry: ServerProcess,
    holder: ShareHolderProcess,
    admin_token: str,
    holder_registry_token: str,
    folder: Path,
    datasets_dir: Path,
) -> SecureWorld:
    with RegistryClient(registry.url, admin_token) as admin:
        base_path = make_base(folder / "base.safetensors", num_classes=8)
        registered = admin.register_base("fuzz", base_path)
        base = _wait(lambda: admin.get_base(registered["id"]), {"verifying"})
        benchmark = admin.register_benchmark(
            "fuzz", make_benchmark(datasets_dir, folder / "benchmark.npz", n_test=64, n_val=64)
        )
        hospitals = [_hospital(admin, holder, f"fuzz-hospital-{n}") for n in range(K)]
        vectors, shares, held = [], [], []
        for n, hospital in enumerate(hospitals):
            vector = fine_tuned_vector(
                base_path,
                folder / f"{hospital.name}.safetensors",
                base_id=base["id"],
                base_sha256=base["sha256"],
                hospital=hospital.name,
                data=hospital_data(datasets_dir, n, n=64),
                steps=2,
                seed=n,
            )
            with RegistryClient(registry.url, hospital.token) as client:
                vectors.append(client.push_vector(vector)["id"])
            pushed = _push_secure(registry, holder, hospital, vector, folder / hospital.name)
            shares.append(pushed["registry"]["vector"]["id"])
            held.append(pushed["share_holder"]["share"])
        plain = admin.request_merge(base["id"], "weighted_mean", selection={"vector_ids": vectors})
        secure = admin.post("/api/v1/secure/merges", json={"base_id": base["id"]})
        assert secure.status_code == 202, secure.text
        jobs = [plain["job_id"], secure.json()["job_id"]]
        versions = [
            _wait(partial(admin.get_merge, job), {"queued", "running"})["version_id"]
            for job in jobs
        ]
        for version in versions:  # evaluated on the benchmark before the worker stops
            _wait(partial(_evaluations, admin, version), {"queued", "running"})
        spare = _hospital(admin, holder, "fuzz-spare")
    hospital = hospitals[0]
    with RegistryClient(registry.url, hospital.token) as client:
        registry_upload = client.create_upload("0" * 64, 1024)["id"]
    with ShareHolderClient(holder.url, hospital.holder_token) as client:
        holder_upload = client.create_upload("0" * 64, 1024)["id"]
    registry_ids = {
        "base_id": [base["id"], "current"],
        "benchmark_id": [benchmark["id"]],
        "hospital_id": [spare.id],
        "token_id": [spare.token_id],
        "vector_id": [vectors[0], shares[0], vectors[1]],
        "vector_ids": shares,
        "version_id": versions,
        "job_id": jobs,
        "upload_id": [registry_upload],
    }
    holder_ids = {
        "upload_id": [holder_upload],
        "share_id": [held[0]["id"], held[1]["id"]],
        "request_id": [jobs[1]],  # the secure merge's sum: asked again, it is a replay
    }
    pair_ids = [share["pair_id"] for share in held]
    return SecureWorld(
        registry,
        holder,
        admin_token,
        holder_registry_token,
        hospital,
        registry_ids,
        holder_ids,
        pair_ids,
    )


def _hospital(admin: RegistryClient, holder: ShareHolderProcess, name: str) -> Hospital:
    """A hospital with its token at the registry and at the share holder."""
    record = admin.create_hospital(name)
    token = admin.create_token(f"{name}-token", "hospital", str(record["id"]))
    holder_token = holder.mint(name, "hospital")
    return Hospital(str(record["id"]), name, str(token["token"]), str(token["id"]), holder_token)


def _push_secure(
    registry: ServerProcess,
    holder: ShareHolderProcess,
    hospital: Hospital,
    vector: Path,
    cache: Path,
) -> dict[str, Any]:
    """``medvec push --secure``'s own steps: split, share B to the holder, A to the registry."""
    pair = prepare_shares(vector, sha256_file(vector), cache, noise=None, max_norm=DEFAULT_MAX_NORM)
    resume = ResumeStore(cache / "uploads")
    with (
        RegistryClient(registry.url, hospital.token) as client,
        ShareHolderClient(holder.url, hospital.holder_token) as holder_client,
    ):
        return push_pair(pair, Uploader(holder_client, resume), Uploader(client, resume))


def _evaluations(admin: RegistryClient, version_id: str) -> dict[str, Any]:
    """The version's evaluations as one status: the first not completed, or completed."""
    statuses = [row["status"] for row in admin.version_evaluations(version_id)]
    pending = [s for s in statuses if s != "completed"]
    return {"status": pending[0] if pending else "completed", "evaluations": statuses}


def _wait(read: Callable[[], dict[str, Any]], pending: set[str]) -> dict[str, Any]:
    """``read()`` once its status has left ``pending``; it must then have succeeded."""
    deadline = time.monotonic() + SEED_TIMEOUT_S
    record = read()
    while record["status"] in pending and time.monotonic() < deadline:
        time.sleep(0.2)
        record = read()
    assert record["status"] in ("ready", "succeeded", "completed"), record
    return record
