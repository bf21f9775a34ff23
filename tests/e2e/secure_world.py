"""Live servers for the secure-aggregation end-to-end test: the share holder
(``python -m aggregator serve``, i.e. ``medvec-aggregator``) and the registry
(``medvec-server serve``) as real processes, on the embedded default or on PostgreSQL +
Redis with a separate Celery worker process."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from hospital_cli.demo.server import free_port

READY_TIMEOUT_S = 300.0


class AggregatorProcess:
    """The share holder in its own process group on a loopback port."""

    def __init__(self, data_dir: Path, log_dir: Path, *, database_url: str | None) -> None:
        self.admin_token = "mv_" + secrets.token_urlsafe(32)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log_dir / "aggregator.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("MEDVEC_")}
        env.update(
            {
                "MEDVEC_AGG_DATA_DIR": str(data_dir),
                "MEDVEC_AGG_BOOTSTRAP_ADMIN_TOKEN": self.admin_token,
                "PYTHONUNBUFFERED": "1",
            }
        )
        if database_url:
            env["MEDVEC_AGG_DATABASE_URL"] = database_url
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [sys.executable, "-m", "aggregator", "serve", "--port", str(self.port)]
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                command, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"medvec-aggregator exited: {self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"medvec-aggregator not ready: {self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(30)

    def client(self, token: str) -> httpx.Client:
        return httpx.Client(
            base_url=self.url + "/api/v1",
            headers={"Authorization": f"Bearer {token}"},
            timeout=120.0,
        )

    def mint(self, name: str, role: str) -> str:
        with self.client(self.admin_token) as admin:
            answer = admin.post("/tokens", json={"name": name, "role": role})
            answer.raise_for_status()
            return str(answer.json()["token"])
