"""A live registry (uvicorn on a free loopback port, SQLite in tmp) and a CLI runner.

The CLI is driven through ``hospital_cli.main.main`` so that the error mapping (one
line on stderr, exit code) is exercised exactly as a user meets it. The registry app
is wrapped in a small ASGI middleware that counts the body bytes the server receives
per upload session, so resume tests can assert what crossed the wire.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from click.testing import CliRunner

from hospital_cli.client import RegistryClient
from hospital_cli.demo.server import free_port
from hospital_cli.waiting import await_status
from medvec.hashing import sha256_file
from tests.cli.tiny import make_base

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

UPLOADS_PREFIX = "/api/v1/uploads/"


class UploadByteCounter:
    """ASGI middleware: bytes of request bodies received by ``PUT /api/v1/uploads/{id}``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.received: Counter[str] = Counter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = str(scope.get("path", ""))
        if scope["type"] != "http" or scope.get("method") != "PUT":
            await self.app(scope, receive, send)
            return
        if not path.startswith(UPLOADS_PREFIX):
            await self.app(scope, receive, send)
            return
        upload_id = path[len(UPLOADS_PREFIX) :].split("/")[0]

        async def counting_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                self.received[upload_id] += len(message.get("body", b""))
            return message

        await self.app(scope, counting_receive, send)


@dataclass
class Registry:
    url: str
    admin_token: str
    data_dir: Path
    counter: UploadByteCounter
    state: dict[str, Any] = field(default_factory=dict)

    def admin(self) -> RegistryClient:
        return RegistryClient(self.url, self.admin_token)

    def bytes_received(self, upload_id: str) -> int:
        return self.counter.received[upload_id]


@dataclass
class Hospital:
    id: str
    name: str
    token: str


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)

    def error_lines(self) -> list[str]:
        """The non-empty stderr lines (progress bars are transient and print nothing)."""
        return [line for line in self.stderr.splitlines() if line.strip()]


def _serve(app: ASGIApp, port: int) -> tuple[uvicorn.Server, threading.Thread]:
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started and thread.is_alive():  # wait for start-up, not a duration
        time.sleep(0.05)
    if not server.started:
        pytest.fail("the registry did not start")
    return server, thread


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """The real registry app served by uvicorn in a thread, on an embedded SQLite,
    with the embedded Celery worker (a real consumer in this process) running its jobs."""
    from app import schema
    from app.db import make_engine
    from app.main import create_app
    from worker.config import WorkerSettings
    from worker.embedded import embedded_worker

    data_dir = tmp_path_factory.mktemp("registry")
    admin_token = "mv_" + secrets.token_urlsafe(32)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MEDVEC_DATA_DIR", str(data_dir))
        patch.setenv("MEDVEC_BOOTSTRAP_ADMIN_TOKEN", admin_token)
        # tiny vectors from a few steps on a handful of images: not what screening is
        # for (it is tested on real hospitals in tests/e2e/test_screening.py)
        patch.setenv("MEDVEC_SCREENING_ENABLED", "false")
        patch.setenv("MEDVEC_AUTO_MERGE", "false")  # the CLI's merges are the ones it asks for
        for name in ("MEDVEC_DATABASE_URL", "DATABASE_URL", "MEDVEC_REDIS_URL"):
            patch.delenv(name, raising=False)
        settings = WorkerSettings()
    engine = make_engine(settings.resolved_database_url)
    schema.upgrade(engine)  # the worker's start-up sweep reads the job tables
    engine.dispose()
    with embedded_worker(settings) as queue:
        counter = UploadByteCounter(create_app(settings, job_queue=queue))
        port = free_port()
        server, thread = _serve(counter, port)
        yield Registry(f"http://127.0.0.1:{port}", admin_token, data_dir, counter)
        server.should_exit = True
        thread.join(timeout=30)


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A freshly initialised tiny base model file (no registry involved)."""
    return make_base(tmp_path_factory.mktemp("base") / "tiny-base.safetensors")


@pytest.fixture(scope="session")
def base_record(registry: Registry, tiny_base: Path) -> dict[str, Any]:
    """The tiny base registered once per session; ``path`` is the local file."""
    path = tiny_base
    with registry.admin() as admin:
        record = admin.register_base("tiny-base", path)
        record = await_status(record, lambda: admin.get_base(record["id"]), {"verifying"}, 120)
    assert record["sha256"] == sha256_file(path) and record["status"] == "ready"
    return {**record, "path": str(path)}


def new_hospital(registry: Registry) -> Hospital:
    name = f"hospital-{secrets.token_hex(4)}"
    with registry.admin() as admin:
        record = admin.create_hospital(name)
        token = admin.create_token(f"{name}-cli", "hospital", str(record["id"]))
    return Hospital(str(record["id"]), name, str(token["token"]))


@pytest.fixture()
def hospital(registry: Registry) -> Hospital:
    """A fresh hospital with its own token."""
    return new_hospital(registry)


@pytest.fixture()
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., CliResult]:
    """Run ``medvec ARGS`` in-process with a private config dir; returns a CliResult."""
    monkeypatch.setenv("MEDVEC_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("MEDVEC_CACHE_DIR", str(tmp_path / "cache"))
    for name in ("MEDVEC_SERVER", "MEDVEC_TOKEN", "MEDVEC_PROFILE", "MEDVEC_DEBUG"):
        monkeypatch.delenv(name, raising=False)

    def run(*args: Any, env: dict[str, str] | None = None) -> CliResult:
        from hospital_cli.main import main

        runner = CliRunner()
        code = 0
        with runner.isolation(env=env) as (out, err, _):
            try:
                main([str(a) for a in args])
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
        return CliResult(code, out.getvalue().decode(), err.getvalue().decode())

    return run


def login(cli: Callable[..., CliResult], registry: Registry, token: str) -> None:
    result = cli("login", "--server", registry.url, "--token", token)
    assert result.exit_code == 0, result.stderr


def assert_one_line_error(result: CliResult, exit_code: int, *needles: str) -> None:
    """A failure is exactly one ``Error:`` line on stderr, no traceback, the given exit."""
    lines = result.error_lines()
    assert result.exit_code == exit_code, (result.exit_code, result.stderr)
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error:"), lines[0]
    assert "Traceback" not in result.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
