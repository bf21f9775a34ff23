"""``medvec-server serve --no-worker`` never imports torch, even while it validates uploads.

The registry runs as its own process (the real command, with Redis as the broker, so its
sending queue is built too). The test registers a base, verifies it as a worker would
(in this process, which has torch), pushes a good vector one-shot and resumably and a
NaN one, then asks the server process itself, over its stdin, which modules it holds.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import torch

from app.db import make_engine
from app.storage import LocalBlobStore
from hospital_cli.demo.server import free_port
from tests.api.conftest import API, verify
from tests.api.factories import ModelKit
from tests.api.helpers import OCTET, error, push, resumable_push
from tests.integration.services import fresh_redis_database

#: runs in the server process: answers each line on stdin with the modules it has loaded,
#: then serves the registry exactly as ``medvec-server serve --no-worker`` does
SERVER = """
import json, sys, threading

def report():
    for _ in sys.stdin:
        loaded = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
        print(json.dumps({"torch": loaded}), flush=True)

threading.Thread(target=report, daemon=True).start()
from app.cli import cli
cli(["serve", "--no-worker", "--port", sys.argv[1], "--log-level", "warning"])
"""


@dataclass
class Server:
    process: subprocess.Popen[str]
    url: str
    admin_token: str
    data_dir: Path

    def client(self, token: str) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"}
        return httpx.Client(base_url=self.url + API, headers=headers, timeout=60)

    def torch_modules(self) -> list[str]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write("report\n")
        self.process.stdin.flush()
        return list(json.loads(self.process.stdout.readline())["torch"])


@pytest.fixture()
def server(tmp_path: Path) -> Iterator[Server]:
    with fresh_redis_database() as redis_url:
        yield from _serve_torchless(tmp_path, redis_url)


def _serve_torchless(tmp_path: Path, redis_url: str) -> Iterator[Server]:
    port, token = free_port(), "mv_" + secrets.token_urlsafe(32)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(sys.path),
        "MEDVEC_ENVIRONMENT": "test",
        "MEDVEC_DATA_DIR": str(tmp_path),
        "MEDVEC_BOOTSTRAP_ADMIN_TOKEN": token,
        "MEDVEC_REDIS_URL": redis_url,
        "MEDVEC_METRICS_ENABLED": "false",
    }
    process = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(port)],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        assert process.poll() is None, "the registry process exited"
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "the registry did not start"
        time.sleep(0.2)
    try:
        yield Server(process, url, token, tmp_path)
    finally:
        process.terminate()
        process.wait(timeout=30)


def _hospital(admin: httpx.Client) -> tuple[str, str]:
    name = f"torchless-{secrets.token_hex(4)}"
    hospital = admin.post("/hospitals", json={"name": name}).json()
    minted = admin.post(
        "/tokens", json={"name": name, "role": "hospital", "hospital_id": hospital["id"]}
    )
    assert minted.status_code == 201, minted.text
    return name, minted.json()["token"]


def test_registry_validates_pushes_without_importing_torch(server: Server, kit: ModelKit) -> None:
    with server.client(server.admin_token) as admin, kit.base_path.open("rb") as body:
        registered = admin.post("/bases", params={"name": "r18"}, content=body, headers=OCTET)
        assert registered.status_code == 201, registered.text
        assert registered.json()["status"] == "verifying"
        engine = make_engine(f"sqlite:///{server.data_dir / 'registry.db'}")
        try:
            store = LocalBlobStore(server.data_dir / "blobs")
            assert verify(engine, store, registered.json()["id"]) == "ready"
        finally:
            engine.dispose()
        name, token = _hospital(admin)

    nan = {k: v.clone() for k, v in kit.tensors.items()}
    next(t for t in nan.values() if t.numel() > 1).view(-1)[1] = torch.nan
    with server.client(token) as client:
        accepted = push(client, kit.vector(name))
        assert accepted.status_code == 201, accepted.text
        assert accepted.json()["norm"] == pytest.approx(
            float(
                torch.sqrt(
                    sum(
                        (t.double().square().sum() for t in kit.tensors.values()),
                        torch.zeros((), dtype=torch.float64),
                    )
                )
            ),
            rel=1e-12,
        )
        resumed = resumable_push(client, kit.vector(name, scale=0.5), part=1 << 20)
        assert resumed.status_code == 201, resumed.text
        refused = push(client, kit.vector(name, tensors=nan))
        assert refused.status_code == 422
        assert error(refused)["code"] == "vector_non_finite"

    assert server.torch_modules() == []
