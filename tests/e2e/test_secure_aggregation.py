"""Secure aggregation end to end on real MedMNIST data (issue 16).

Live share holder and registry processes (and, on PostgreSQL + Redis, a Celery worker
process); four hospitals fine-tune ResNet-10 at 28 px on their own PneumoniaMNIST shards
and push with ``medvec push --secure`` one after another. The test shows that

- the secure weighted mean and the secure task arithmetic equal the plaintext merges of
  the same vectors to within the fixed-point precision, with unequal public weights (one
  hospital pushes with ``--secure-weight``; each pre-scales its own vector);
- the share the registry stores is independent of the vector: two splits of one vector
  are uncorrelated, and each is uniform over Z/2^64 (chi-square on the top byte, KS on
  the value), while the encoded vector itself fails the same tests;
- a set below K is refused (registry and share holder), and so is a set that differs
  from a released one by one member; leave-one-out contributions of a secure version
  are refused;
- a distributed-DP merge (each hospital adds sigma*C/sqrt(K)) is evaluated by the
  registry, and its accuracy and epsilon are reported.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from scipy import stats

from hospital_cli.client import RegistryClient
from hospital_cli.waiting import await_status
from medvec.merging import merge_files
from medvec.models import ModelSpec, get_model, save_model_file
from medvec.secure import encode
from medvec.vectors import load_vector
from tests.servers import ServerProcess, ShareHolderProcess, registry_env

MEDVEC = Path(sys.executable).with_name("medvec")
HOSPITALS = 4
PER_HOSPITAL = 300
K = 3
SIGMA, CLIP, DELTA = 0.05, 5.0, 1e-5
LAMBDA = 0.4
THIRD_WEIGHT = 150
TRAIN = ["--steps", "5", "--batch-size", "32", "--device", "cpu", "--seed", "0"]


@dataclass
class Trained:
    base: Path
    benchmark: Path
    vectors: list[Path]
    names: list[str]


def _run(args: list[Any], env: dict[str, str], timeout: float = 600) -> Any:
    done = subprocess.run(
        [str(MEDVEC), *map(str, args), "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, datasets_dir: Path) -> Trained:
    """A ResNet-10 base and each hospital's data vector on its own shard (trained once)."""
    from hospital_cli.demo.data import prepare_data

    folder = tmp_path_factory.mktemp("secure-data")
    data = prepare_data(
        "pneumoniamnist",
        folder,
        datasets_dir=datasets_dir,
        hospitals=HOSPITALS,
        alpha=None,
        max_train=HOSPITALS * PER_HOSPITAL,
        max_val=300,
        max_test=600,
        seed=0,
    )
    torch.manual_seed(0)
    spec = ModelSpec(arch="resnet10", num_classes=2, in_channels=3, image_size=28)
    base = save_model_file(folder / "base.safetensors", get_model("resnet10", num_classes=2), spec)
    env = {**os.environ, "MEDVEC_CONFIG_DIR": str(folder / "config"), "OMP_NUM_THREADS": "1"}
    names = [f"hospital-{n + 1}" for n in range(HOSPITALS)]
    vectors = []
    for name, shard in zip(names, data.shards, strict=True):
        out = folder / f"{name}.safetensors"
        _run(["train", "--base", base, "--hospital", name, "--data", shard, *TRAIN, "-o", out], env)
        vectors.append(out)
    return Trained(base, data.benchmark, vectors, names)


@dataclass
class World:
    registry: ServerProcess
    holder: ShareHolderProcess
    admin: RegistryClient
    registry_token_at_holder: str
    tokens: dict[str, str]
    holder_tokens: dict[str, str]
    root: Path

    def push(self, name: str, vector: Path, cache: str, *extra: Any) -> Any:
        env = {
            **os.environ,
            "MEDVEC_CONFIG_DIR": str(self.root / f"config-{name}"),
            "MEDVEC_CACHE_DIR": str(self.root / f"cache-{name}-{cache}"),
        }
        return _run(
            [
                "push", vector, "--secure",
                "--server", self.registry.url, "--token", self.tokens[name],
                "--share-holder", self.holder.url,
                "--share-holder-token", self.holder_tokens[name],
                *extra,
            ],
            env,
        )  # fmt: skip

    def secure_merge(self, **body: Any) -> Any:
        return self.admin.post("/api/v1/secure/merges", json=body)

    def wait_job(self, job_id: str, timeout: float = 600) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.admin.get_merge(job_id)
            if job["status"] in ("succeeded", "failed"):
                return job
            time.sleep(1.0)
        raise AssertionError(
            f"merge {job_id} still {job['status']}: {self.registry.logs()[-3000:]}"
        )

    def wait_test_accuracy(self, version_id: str, timeout: float = 600) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for row in self.admin.version_evaluations(version_id):
                if row.get("split") == "test" and row.get("status") == "completed":
                    return float(row["metrics"]["accuracy"])
                if row.get("split") == "test" and row.get("status") == "failed":
                    raise AssertionError(f"evaluation failed: {row}")
            time.sleep(1.0)
        raise AssertionError(f"version {version_id} was not evaluated")


@pytest.fixture(
    params=["embedded", pytest.param("postgres", marks=[pytest.mark.postgres, pytest.mark.redis])]
)
def world(request: pytest.FixtureRequest, tmp_path: Path, trained: Trained) -> Iterator[World]:
    from tests.integration.services import fresh_postgres_database, fresh_redis_database
    from tests.servers import WorkerProcess

    with contextlib.ExitStack() as stack:
        extra: dict[str, str] = {}
        holder_db = None
        if request.param == "postgres":
            registry_db = stack.enter_context(fresh_postgres_database())
            holder_db = stack.enter_context(fresh_postgres_database())
            redis_url = stack.enter_context(fresh_redis_database())
            extra = {"database_url": registry_db, "redis_url": redis_url, "queue": "medvec-secure"}
        holder = ShareHolderProcess(tmp_path / "holder", tmp_path, database_url=holder_db)
        holder.start()
        stack.callback(holder.stop)
        registry_token = holder.mint("registry", "registry")
        admin_token = "mv_" + secrets.token_urlsafe(32)
        env = registry_env(
            tmp_path / "registry",
            admin_token,
            share_holder_url=holder.url,
            share_holder_token=registry_token,
            secure_min_set_size=str(K),
            **extra,
        )
        if request.param == "postgres":
            env["MEDVEC_AUTO_MIGRATE"] = "true"
        registry = ServerProcess(env, tmp_path, worker=request.param == "embedded")
        registry.start()
        stack.callback(registry.stop)
        if request.param == "postgres":
            worker = WorkerProcess(env, tmp_path, "medvec-secure")
            worker.start()
            stack.callback(worker.stop)
        admin = RegistryClient(registry.url, admin_token, timeout=300)
        stack.callback(admin.close)
        base = admin.register_base("resnet10-pneumonia", trained.base)
        base = await_status(base, lambda: admin.get_base(str(base["id"])), {"verifying"}, 300)
        assert base["status"] == "ready", base
        admin.register_benchmark("pneumonia-heldout", trained.benchmark)
        tokens, holder_tokens = {}, {}
        for name in trained.names:
            hospital = admin.create_hospital(name)
            tokens[name] = str(admin.create_token(name, "hospital", str(hospital["id"]))["token"])
            holder_tokens[name] = holder.mint(name, "hospital")
        yield World(registry, holder, admin, registry_token, tokens, holder_tokens, tmp_path)


def _ring(path: Path) -> np.ndarray:
    tensors, _ = load_vector_raw(path)
    return np.concatenate([t.reshape(-1) for t in tensors])


def load_vector_raw(path: Path) -> tuple[list[np.ndarray], None]:
    from medvec.vectors.lazy import LazyTensorReader

    with LazyTensorReader(path) as reader:
        return [reader.read(n, copy=True).numpy().view(np.uint64) for n in reader.keys()], None


def _download(admin: RegistryClient, what: str, dest: Path) -> Path:
    with dest.open("wb") as handle:
        admin.download(what, handle)
    return dest


def _max_abs_difference(merged: Path, plain: Path) -> float:
    secure_state, plain_state = load_file(merged), load_file(plain)
    return max(
        float((secure_state[k].double() - plain_state[k].double()).abs().max())
        for k in plain_state
        if plain_state[k].is_floating_point()
    )


def _uniform_p_values(ring: np.ndarray) -> tuple[float, float]:
    """Chi-square on the top byte (256 equal cells) and KS of value / 2^64 on a sample."""
    top = (ring >> np.uint64(56)).astype(np.int64)
    chi = stats.chisquare(np.bincount(top, minlength=256)).pvalue
    sample = np.random.default_rng(0).choice(ring, size=min(200_000, ring.size), replace=False)
    ks = stats.kstest(sample.astype(np.float64) / 2.0**64, "uniform").pvalue
    return float(chi), float(ks)


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_secure_pushes_merge_like_plaintext_and_leak_nothing(
    world: World, trained: Trained, tmp_path: Path
) -> None:
    report: dict[str, Any] = {}
    v1, v2, v3, v4 = trained.vectors
    h1, h2, h3, h4 = trained.names

    # hospital 1 pushes; the same push again is idempotent on both servers
    first = world.push(h1, v1, "a")
    again = world.push(h1, v1, "a")
    assert again["pair_id"] == first["pair_id"]
    assert again["registry"]["already_known"] and again["share_holder"]["already_known"]
    assert again["registry"]["vector"]["id"] == first["registry"]["vector"]["id"]
    assert first["registry"]["vector"]["status"] == "share"

    # a second split of the same vector: a new pair, which supersedes the first share
    second = world.push(h1, v1, "b")
    assert second["pair_id"] != first["pair_id"]
    share_1 = _ring(
        _download(
            world.admin, f"/vectors/{first['registry']['vector']['id']}/download", tmp_path / "a1"
        )
    )
    share_2 = _ring(
        _download(
            world.admin, f"/vectors/{second['registry']['vector']['id']}/download", tmp_path / "a2"
        )
    )
    tensors, _meta = load_vector(v1)
    encoded = np.concatenate([encode(t.double().numpy()).reshape(-1) for t in tensors.values()])
    assert share_1.shape == encoded.shape
    n = share_1.size
    as_unit = lambda ring: ring.astype(np.float64) / 2.0**64  # noqa: E731
    r_shares = float(np.corrcoef(as_unit(share_1), as_unit(share_2))[0, 1])
    r_vector = float(np.corrcoef(as_unit(share_1), encoded.view(np.int64).astype(np.float64))[0, 1])
    bound = 5.0 / np.sqrt(n)
    assert abs(r_shares) < bound and abs(r_vector) < bound, (r_shares, r_vector, bound)
    chi_1, ks_1 = _uniform_p_values(share_1)
    chi_2, ks_2 = _uniform_p_values(share_2)
    chi_v, ks_v = _uniform_p_values(encoded)
    assert min(chi_1, ks_1, chi_2, ks_2) > 1e-4, (chi_1, ks_1, chi_2, ks_2)
    assert max(chi_v, ks_v) < 1e-10, "the tests must be able to tell the vector from noise"
    report["independence"] = {
        "entries": int(n), "corr_share_share": r_shares, "corr_share_vector": r_vector,
        "chi2_p": [chi_1, chi_2], "ks_p": [ks_1, ks_2], "vector_chi2_p": chi_v,
    }  # fmt: skip

    # two hospitals: below K, refused by the registry and by the share holder
    p2 = world.push(h2, v2, "a")
    below = world.secure_merge(calibration="none")
    assert below.status_code == 422 and "at least 3" in below.json()["message"], below.text
    with world.holder.client(world.registry_token_at_holder) as holder:
        refused = holder.post(
            "/sums",
            json={"request_id": "probe", "members": {second["pair_id"]: 1, p2["pair_id"]: 1}},
        )
    assert refused.status_code == 403 and refused.json()["code"] == "set_too_small", refused.text

    # a third hospital, with its own public weight: the secure weighted mean equals the
    # plaintext one with the same weights
    p3 = world.push(h3, v3, "a", "--secure-weight", THIRD_WEIGHT)
    current = [p["registry"]["vector"]["id"] for p in (second, p2, p3)]
    records = [world.admin.get_vector(i) for i in current]
    weights = [int(r["metadata"]["share"]["weight"]) for r in records]
    assert weights == [records[0]["num_samples"], records[1]["num_samples"], THIRD_WEIGHT]
    assert p3["weight"] == THIRD_WEIGHT
    accepted = world.secure_merge(calibration="none")
    assert accepted.status_code == 202, accepted.text
    job = world.wait_job(accepted.json()["job_id"])
    assert job["status"] == "succeeded", job
    merged = _download(world.admin, f"/versions/{job['version_id']}/download", tmp_path / "m.st")
    plain = tmp_path / "plain.safetensors"
    merge_files(trained.base, [v1, v2, v3], plain, strategy="weighted_mean", weights=weights)
    worst = _max_abs_difference(merged, plain)
    assert worst < 1e-6, worst  # 2^-24 per encoded value, float32 rounding of the result
    report["max_abs_difference_secure_vs_plaintext"] = worst
    secure_accuracy = world.wait_test_accuracy(job["version_id"])
    # leave-one-out contributions would reveal one vector: refused for a secure version
    loo = world.admin.post(f"/api/v1/versions/{job['version_id']}/contributions")
    assert loo.status_code == 422 and "secure mode" in loo.json()["message"], loo.text

    # secure task arithmetic over the same three shares: lambda * N / W times the same
    # plain sum, i.e. task arithmetic with the public weights normalised to mean 1; the
    # share holder releases it because it is the same set again
    ta = world.secure_merge(
        strategy="task_arithmetic", vector_ids=current, calibration="none", **{"lambda": LAMBDA}
    )
    assert ta.status_code == 202, ta.text
    ta_job = world.wait_job(ta.json()["job_id"])
    assert ta_job["status"] == "succeeded", ta_job
    ta_merged = _download(
        world.admin, f"/versions/{ta_job['version_id']}/download", tmp_path / "ta.st"
    )
    ta_plain = tmp_path / "ta-plain.safetensors"
    normalised = [len(weights) * w / sum(weights) for w in weights]
    merge_files(
        trained.base,
        [v1, v2, v3],
        ta_plain,
        strategy="task_arithmetic",
        params={"lambda": LAMBDA},
        weights=normalised,
    )
    ta_worst = _max_abs_difference(ta_merged, ta_plain)
    assert ta_worst < 1e-6, ta_worst
    report["max_abs_difference_secure_vs_plaintext_task_arithmetic"] = ta_worst

    # a fourth: the set of four differs from the released set of three by one member
    world.push(h4, v4, "a")
    leak = world.secure_merge(calibration="none")
    assert leak.status_code == 202, leak.text
    failed = world.wait_job(leak.json()["job_id"])
    assert failed["status"] == "failed" and "differencing_set" in failed["error"], failed
    with world.holder.client(world.registry_token_at_holder) as holder:
        released = holder.get("/sums").json()
    three = sorted([second["pair_id"], p2["pair_id"], p3["pair_id"]])
    assert [sorted(s["members"]) for s in released] == [three, three]  # mean, task arithmetic
    logged = world.admin.audit(action="secure.sum")
    assert len(logged) == 2 and all(sorted(e["payload"]["members"]) == three for e in logged)

    # distributed DP: three hospitals push noisy shares (sigma*C/sqrt(K) each)
    dp_args = ["--dp-noise", SIGMA, "--dp-clip", CLIP, "--dp-k", K, "--dp-delta", DELTA]
    noisy = [world.push(h, v, "dp", *dp_args) for h, v in ((h1, v1), (h2, v2), (h3, v3))]
    assert [p["weight"] for p in noisy] == [1, 1, 1]  # each part of the noise at one scale
    ids = [p["registry"]["vector"]["id"] for p in noisy]
    privacy = world.admin.get_vector(ids[0])["metadata"]["privacy"]
    from medvec.privacy import gaussian_epsilon

    assert privacy["mechanism"] == "distributed_gaussian" and privacy["secure_k"] == K
    assert privacy["epsilon"] == pytest.approx(gaussian_epsilon(SIGMA, DELTA))
    assert privacy["noise_std"] == pytest.approx(SIGMA * CLIP / np.sqrt(K))
    assert f"at least {K} honest hospitals" in privacy["guarantee"]
    dp_job = world.wait_job(world.secure_merge(vector_ids=ids).json()["job_id"])
    assert dp_job["status"] == "succeeded", dp_job
    dp_accuracy = world.wait_test_accuracy(dp_job["version_id"])
    report["accuracy"] = {"secure_weighted_mean": secure_accuracy, "distributed_dp": dp_accuracy}
    report["dp"] = {
        "sigma": SIGMA,
        "clip": CLIP,
        "k": K,
        "delta": DELTA,
        "epsilon": privacy["epsilon"],
    }
    print("SECURE-AGGREGATION REPORT", json.dumps(report, sort_keys=True))  # noqa: T201
    assert 0.0 <= dp_accuracy <= 1.0
