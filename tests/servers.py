"""The real processes the suites start, stop and kill with SIGKILL: ``medvec-server
serve``, a ``celery worker``, ``celery beat``, a ``redis-server`` of the test's own and
the share holder (``medvec-aggregator serve``).

Each runs in its own process group (a SIGKILL takes its children too: a machine that
loses power) and writes one log file per start in the test's folder.

Run as ``python -m tests.servers serve ...``, this module is the shipped ``medvec-server``
entry point with the tests' tiny CNN in its model registry, so that real vectors stay a
few hundred KiB (``ServerProcess(..., tiny_models=True)``).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import redis

from hospital_cli.demo.server import free_port, server_command

READY_TIMEOUT_S = 300.0
API = "/api/v1"
ROOT = Path(__file__).resolve().parents[1]


def registry_env(data_dir: Path, admin_token: str, **settings: str) -> dict[str, str]:
    """This environment without any ``MEDVEC_*`` variable, plus the registry's own:
    ``data_dir``, the bootstrap admin token and ``settings`` (``MEDVEC_`` + NAME upper)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDVEC_")}
    env.update(
        {
            "MEDVEC_ENVIRONMENT": "test",
            "MEDVEC_DATA_DIR": str(data_dir),
            "MEDVEC_BOOTSTRAP_ADMIN_TOKEN": admin_token,
            "PYTHONUNBUFFERED": "1",
            # tests make the versions they judge; those about the policy turn it on
            "MEDVEC_AUTO_MERGE": "false",
            **{f"MEDVEC_{name.upper()}": value for name, value in settings.items()},
        }
    )
    return env


class ChildProcess:
    """A command in its own process group, logging to ``<name>-<start>.log``."""

    name = "process"

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = env
        self.log_dir = log_dir
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def command(self) -> list[str]:
        raise NotImplementedError

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"{self.name}-{self.starts}.log"

    def launch(self) -> None:
        self.starts += 1
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                self.command(),
                env=self.env,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_until(self, ready: Callable[[], bool], timeout: float) -> None:
        """Poll ``ready`` until it is true; raise (and kill) when the process exits first
        or ``timeout`` passes, with the log's end in the message."""
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {self.logs()[-3000:]}")
            if ready():
                return
            time.sleep(0.2)
        self.kill()  # not left behind (consuming a shared queue) when the test errors
        raise RuntimeError(f"{self.name} not ready after {timeout} s: {self.logs()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL the whole process group: the machine loses power."""
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(30)

    def pause(self) -> None:
        """SIGSTOP the process group: it stays exactly where it is until resumed or killed."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGCONT)

    def stop(self, grace: float = 30.0) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds."""
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(grace)
        except subprocess.TimeoutExpired:
            self.kill()

    def logs(self) -> str:
        return "\n".join(
            (self.log_dir / f"{self.name}-{i}.log").read_text(errors="replace")
            for i in range(1, self.starts + 1)
        )


class HttpServerProcess(ChildProcess):
    """A server of this project on a loopback port kept across restarts, ready once its
    ``/readyz`` answers 200."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        super().__init__(env, log_dir)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = READY_TIMEOUT_S) -> None:
        """Start and wait until ``/readyz`` answers 200."""
        self.launch()
        self.wait_until(self.ready, timeout)

    def ready(self) -> bool:
        try:
            return httpx.get(f"{self.url}/readyz", timeout=2.0).status_code == 200
        except httpx.HTTPError:
            return False

    def client(self, token: str | None = None, timeout: float = 120.0) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url + API, headers=headers, timeout=timeout)


class ServerProcess(HttpServerProcess):
    """``medvec-server serve`` on a fixed loopback port (kept across restarts)."""

    name = "server"

    def __init__(
        self, env: dict[str, str], log_dir: Path, *, worker: bool, tiny_models: bool = False
    ) -> None:
        super().__init__(env, log_dir)
        self.worker = worker
        self.tiny_models = tiny_models

    def command(self) -> list[str]:
        program = [sys.executable, "-m", "tests.servers"] if self.tiny_models else server_command()
        return [
            *program,
            "serve",
            "--worker" if self.worker else "--no-worker",
            *("--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning"),
        ]


class ShareHolderProcess(HttpServerProcess):
    """The share holder (``python -m aggregator serve``, i.e. ``medvec-aggregator``) on a
    loopback port kept across restarts, with its own data folder (and database)."""

    name = "share-holder"

    def __init__(self, data_dir: Path, log_dir: Path, *, database_url: str | None) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MEDVEC_")}
        env.update(
            {
                "MEDVEC_AGG_DATA_DIR": str(data_dir),
                "MEDVEC_AGG_BOOTSTRAP_ADMIN_TOKEN": "mv_" + secrets.token_urlsafe(32),
                "PYTHONUNBUFFERED": "1",
            }
        )
        if database_url:
            env["MEDVEC_AGG_DATABASE_URL"] = database_url
        super().__init__(env, log_dir)
        self.admin_token = env["MEDVEC_AGG_BOOTSTRAP_ADMIN_TOKEN"]

    def command(self) -> list[str]:
        return [sys.executable, "-m", "aggregator", "serve", "--port", str(self.port)]

    def mint(self, name: str, role: str) -> str:
        """A new token of ``role`` named ``name`` (a hospital's is its registry name)."""
        with self.client(self.admin_token) as admin:
            answer = admin.post("/tokens", json={"name": name, "role": role})
            answer.raise_for_status()
            return str(answer.json()["token"])


class WorkerProcess(ChildProcess):
    """``celery -A worker.main worker`` (prefork, one child) on ``queue``; ``app``
    ``worker.merge_main`` for a merge-only worker."""

    name = "worker"

    def __init__(
        self, env: dict[str, str], log_dir: Path, queue: str, app: str = "worker.main"
    ) -> None:
        super().__init__(env, log_dir)
        self.queue = queue
        self.app = app

    def command(self) -> list[str]:
        return [
            *(sys.executable, "-m", "celery", "-A", self.app, "worker"),
            *("--pool=prefork", "--concurrency=1", "-Q", self.queue),
            *("--without-gossip", "--without-mingle", "--loglevel=INFO"),
            f"--hostname=it-{secrets.token_hex(3)}@%h",
        ]

    def start(self, timeout: float = READY_TIMEOUT_S) -> None:
        """Start and wait until the worker logs that it is ready."""
        self.launch()
        self.wait_until(lambda: b" ready." in self.log_path.read_bytes(), timeout)

    def stop(self, grace: float = 60.0) -> None:
        super().stop(grace)


class BeatProcess(ChildProcess):
    """``celery -A worker.main beat``: sends the sweeper (and policy) on their schedule."""

    name = "beat"

    def command(self) -> list[str]:
        return [
            *(sys.executable, "-m", "celery", "-A", "worker.main", "beat"),
            *("--schedule", str(self.log_dir / "beat-schedule"), "--loglevel", "INFO"),
        ]

    def start(self) -> None:
        self.launch()


class RedisServer(ChildProcess):
    """``redis-server`` on its own loopback port, no persistence: a SIGKILL loses every
    message it held, as a crashed broker without an append-only file does."""

    name = "redis"

    def __init__(self, log_dir: Path) -> None:
        super().__init__(dict(os.environ), log_dir)
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        binary = shutil.which("redis-server")
        assert binary, "the fault suite needs the redis-server binary on PATH"
        return [
            *(binary, "--bind", "127.0.0.1", "--port", str(self.port)),
            *("--save", "", "--appendonly", "no", "--dir", str(self.log_dir)),
        ]

    def start(self, timeout: float = 60.0) -> None:
        self.launch()
        self.wait_until(self.ping, timeout)

    def ping(self) -> bool:
        client = redis.Redis.from_url(self.url)
        try:
            return bool(client.ping())
        except redis.ConnectionError:
            return False
        finally:
            client.close()

    def stop(self, grace: float = 0.0) -> None:
        self.kill()

    def queued(self, queue: str) -> list[str]:
        """The task name of each message waiting in ``queue`` (a Redis list for kombu,
        each item a JSON envelope whose headers name the task)."""
        client = redis.Redis.from_url(self.url)
        try:
            return [json.loads(item)["headers"]["task"] for item in client.lrange(queue, 0, -1)]
        finally:
            client.close()


if __name__ == "__main__":
    from app.cli import main
    from tests.cli.tiny import ensure_registered

    ensure_registered()
    main()
