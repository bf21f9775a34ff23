"""A real S3 API server for tests: moto's standalone server (``moto_server``, from
``moto[server]``) as its own process on a free loopback port. The code under test talks
HTTP to it through boto3, exactly as it talks to S3 or MinIO."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from hospital_cli.demo.server import free_port

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "medvec-test",
    "AWS_SECRET_ACCESS_KEY": "medvec-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@dataclass
class S3Server:
    endpoint_url: str
    log: Path

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=CREDENTIALS["AWS_DEFAULT_REGION"],
            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        )

    def new_bucket(self) -> str:
        name = f"medvec-{secrets.token_hex(4)}"
        self.client().create_bucket(Bucket=name)
        return name

    def env(self) -> dict[str, str]:
        """What a process needs to reach this server (besides MEDVEC_BLOB_URL)."""
        return {**CREDENTIALS, "MEDVEC_S3_ENDPOINT_URL": self.endpoint_url}


def _command() -> list[str]:
    beside = Path(sys.executable).with_name("moto_server")
    found = str(beside) if beside.exists() else shutil.which("moto_server")
    if found is None:
        raise RuntimeError("moto_server is not installed: pip install 'moto[server]'")
    return [found]


@contextmanager
def moto_server(log_dir: Path, timeout: float = 600.0) -> Iterator[S3Server]:
    """Start ``moto_server`` on 127.0.0.1, wait until it answers, stop it afterwards."""
    port = free_port()
    log = log_dir / "moto.log"
    env = {**os.environ, **CREDENTIALS}
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*_command(), "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"moto_server exited: {log.read_text()[-2000:]}")
            try:
                httpx.get(url, timeout=2)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"moto_server did not answer in {timeout} s") from None
                time.sleep(0.2)
        yield S3Server(url, log)
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(30)
