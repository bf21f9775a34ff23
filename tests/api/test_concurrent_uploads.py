"""Fifty concurrent uploads from ten hospitals against a real server process, on SQLite
and on PostgreSQL, round after round: each hospital ends with exactly one current vector,
every accepted vector is stored once, identical bytes sent again are answered with the
existing id, and the server's memory stops growing once it is warm."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import torch

from hospital_cli.waiting import await_status
from medvec.hashing import sha256_file
from medvec.models import load_model_file
from medvec.tokens import mint_token
from medvec.vectors import VectorMetadata, compute_vector, save_vector
from tests.api.helpers import OCTET
from tests.cli.tiny import make_base
from tests.servers import ServerProcess, registry_env

API = "/api/v1"
HOSPITALS = 10
PER_HOSPITAL = 5
ROUNDS = 4
MIB = 1 << 20
#: a ~200 KiB vector: the tiny CNN's classifier over 64 classes
NUM_CLASSES = 64
#: RSS the server may gain over the rounds after the first (allocator and cache noise);
#: keeping each round's uploads (~12 MiB of request bodies) would pass it within rounds
RSS_SLACK = 48 * MIB


@dataclass
class Site:
    name: str
    token: str


@dataclass
class Server:
    process: ServerProcess
    admin: httpx.Client
    base: dict[str, Any]
    base_path: Path
    sites: list[Site]
    folder: Path


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def server(
    request: pytest.FixtureRequest, tmp_path: Path, postgres_database: Any
) -> Iterator[Server]:
    admin_token = mint_token()
    # the vectors are seeded noise on a tiny model: screening would rightly quarantine them,
    # and this test is about concurrent uploads, not screening (tests/e2e/test_screening.py)
    settings = {"screening_enabled": "false"}
    if request.param == "postgres":
        settings |= {"database_url": postgres_database(), "auto_migrate": "true"}
    env = registry_env(tmp_path / "data", admin_token, **settings)
    process = ServerProcess(env, tmp_path, worker=True, tiny_models=True)
    process.start()
    headers = {"Authorization": f"Bearer {admin_token}"}
    try:
        with httpx.Client(base_url=process.url + API, headers=headers, timeout=120) as admin:
            base_path = make_base(tmp_path / "base.safetensors", num_classes=NUM_CLASSES)
            base = admin.post(
                "/bases", params={"name": "tiny"}, content=base_path.read_bytes(), headers=OCTET
            )
            assert base.status_code == 201, base.text
            # the worker verifies a new base first
            ready = await_status(
                base.json(), lambda: admin.get(f"/bases/{base.json()['id']}").json(),
                {"verifying"}, 300,
            )  # fmt: skip
            assert ready["status"] == "ready", ready
            sites = [_site(admin, index) for index in range(HOSPITALS)]
            yield Server(process, admin, base.json(), base_path, sites, tmp_path)
    finally:
        process.stop()


def _site(admin: httpx.Client, index: int) -> Site:
    name = f"site-{index}"
    hospital = admin.post("/hospitals", json={"name": name})
    assert hospital.status_code == 201, hospital.text
    body = {"name": name, "role": "hospital", "hospital_id": hospital.json()["id"]}
    token = admin.post("/tokens", json=body)
    assert token.status_code == 201, token.text
    return Site(name, token.json()["token"])


def _vector(server: Server, site: Site, seed: int) -> Path:
    """Seeded noise on every weight of the base: a distinct, valid vector per seed."""
    model, spec = load_model_file(server.base_path)
    state = model.state_dict()
    generator = torch.Generator().manual_seed(seed)
    tuned = {
        k: v + 1e-3 * torch.randn(v.shape, generator=generator) if v.is_floating_point() else v
        for k, v in state.items()
    }
    metadata = VectorMetadata(
        base_id=server.base["id"],
        base_sha256=server.base["sha256"],
        hospital=site.name,
        num_samples=32 + seed % 7,
        spec=spec,
    )
    path = server.folder / f"v-{seed}.safetensors"
    return save_vector(path, compute_vector(state, tuned), metadata)


def _push(client: httpx.Client, site: Site, path: Path) -> tuple[str, int, str]:
    headers = {**OCTET, "Authorization": f"Bearer {site.token}"}
    response = client.post("/vectors", content=path.read_bytes(), headers=headers)
    assert response.status_code in (200, 201), response.text
    return sha256_file(path), response.status_code, response.json()["id"]


def _round(
    server: Server, number: int, earlier: list[tuple[Site, Path]]
) -> list[tuple[str, int, str]]:
    """Each site's five new vectors, interleaved across sites, one identical re-upload of
    one of them sent alongside, and one of the earlier rounds' vectors again."""
    fresh = [
        (site, _vector(server, site, seed=(number * PER_HOSPITAL + k) * HOSPITALS + index))
        for k in range(PER_HOSPITAL)
        for index, site in enumerate(server.sites)
    ]
    twins = fresh[: HOSPITALS * 2 : 2]
    sends = [*fresh, *twins, *earlier[-HOSPITALS // 2 :]]
    limits = httpx.Limits(max_connections=len(sends))
    with (
        httpx.Client(base_url=server.process.url + API, timeout=120, limits=limits) as client,
        ThreadPoolExecutor(max_workers=len(sends)) as pool,
    ):
        answers = list(pool.map(lambda send: _push(client, *send), sends))
    earlier.extend(fresh)
    return answers


def _check_stored(server: Server, answers: list[tuple[str, int, str]]) -> None:
    ids_by_sha: dict[str, set[str]] = {}
    for sha, _status, vector_id in answers:
        ids_by_sha.setdefault(sha, set()).add(vector_id)
    assert all(len(ids) == 1 for ids in ids_by_sha.values()), ids_by_sha  # re-uploads: same id
    created = Counter(sha for sha, status, _id in answers if status == 201)
    assert all(count <= 1 for count in created.values()), created

    rows = server.admin.get("/vectors").json()
    stored = Counter(row["sha256"] for row in rows)
    assert all(count == 1 for count in stored.values()), stored
    assert {row["id"] for row in rows} >= {next(iter(ids)) for ids in ids_by_sha.values()}
    current = Counter(row["hospital_id"] for row in rows if row["status"] == "validated")
    assert sorted(current.values()) == [1] * HOSPITALS, current
    latest = server.admin.get("/vectors", params={"latest": "true"}).json()
    assert len(latest) == HOSPITALS


def test_fifty_concurrent_uploads_from_ten_hospitals_round_after_round(server: Server) -> None:
    process = psutil.Process(server.process.pid)
    earlier: list[tuple[Site, Path]] = []
    everything: list[tuple[str, int, str]] = []
    rss = []
    for number in range(ROUNDS):
        answers = _round(server, number, earlier)
        assert len(answers) == HOSPITALS * PER_HOSPITAL + HOSPITALS + (
            HOSPITALS // 2 if number else 0
        )
        everything += answers
        _check_stored(server, everything)
        rss.append(process.memory_info().rss)
    assert len(server.admin.get("/vectors").json()) == ROUNDS * HOSPITALS * PER_HOSPITAL
    grown = rss[-1] - rss[0]
    assert grown < RSS_SLACK, [f"{r / MIB:.0f} MiB" for r in rss]
