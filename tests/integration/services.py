"""Real services for the integration tests: a fresh PostgreSQL database, a Redis database
index, and a Celery worker process (``celery -A worker.main worker``) on both.

Everything is named at random per test session, because other test sessions share
the same PostgreSQL and Redis servers.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import redis

PG_ADMIN = os.environ.get("MEDVEC_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_HOST = os.environ.get("MEDVEC_TEST_REDIS", "redis://127.0.0.1:6379")


@contextmanager
def fresh_postgres_database() -> Iterator[str]:
    """A new, empty database; its SQLAlchemy URL. Dropped afterwards."""
    name = f"medvec_it_{secrets.token_hex(6)}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    server = PG_ADMIN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
    try:
        yield f"{server}/{name}"
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                (name,),
            )
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')


@contextmanager
def fresh_redis_database() -> Iterator[str]:
    """An empty Redis database index (a random one of 1..15); its URL. Flushed afterwards."""
    for _ in range(30):
        index = 1 + secrets.randbelow(15)
        client = redis.Redis.from_url(f"{REDIS_HOST}/{index}")
        if client.dbsize() == 0:
            break
    else:
        raise RuntimeError("no empty Redis database index found")
    try:
        yield f"{REDIS_HOST}/{index}"
    finally:
        client.flushdb()
        client.close()


class WorkerProcess:
    """``celery worker`` in its own process group, so a test can SIGKILL all of it."""

    def __init__(self, env: dict[str, str], log_dir: Path, queue: str) -> None:
        self.env = env
        self.log_dir = log_dir
        self.queue = queue
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"worker-{self.starts}.log"

    def start(self, timeout: float = 120.0) -> None:
        self.starts += 1
        command = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "worker.main",
            "worker",
            "--pool=prefork",
            "--concurrency=1",
            "-Q",
            self.queue,
            "--without-gossip",
            "--without-mingle",
            "--loglevel=INFO",
            f"--hostname=it-{secrets.token_hex(3)}@%h",
        ]
        log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            command, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"worker exited: {self.log_path.read_text()[-3000:]}")
            if b" ready." in self.log_path.read_bytes():
                return
            time.sleep(0.5)
        raise RuntimeError(f"worker not ready after {timeout} s: {self.log_path.read_text()}")

    def kill(self) -> None:
        """SIGKILL the worker and its pool children: a machine that loses power."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(30)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(30)

    def logs(self) -> str:
        return "\n".join(
            (self.log_dir / f"worker-{i}.log").read_text(errors="replace")
            for i in range(1, self.starts + 1)
        )
