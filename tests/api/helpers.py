"""Small helpers shared by the registry tests: HTTP uploads and ``medvec-server``."""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner, Result

from app.cli import cli
from app.config import get_settings
from medvec.hashing import sha256_file

OCTET = {"Content-Type": "application/octet-stream"}


def push(client: httpx.Client, path: Path) -> httpx.Response:
    """One-shot upload of a file as a streamed raw body."""
    with path.open("rb") as body:
        return client.post("/vectors", content=body, headers=OCTET)


def chunks_of(path: Path, start: int = 0, stop: int | None = None) -> Iterator[bytes]:
    with path.open("rb") as handle:
        handle.seek(start)
        left = (stop if stop is not None else path.stat().st_size) - start
        while left > 0:
            chunk = handle.read(min(1 << 20, left))
            left -= len(chunk)
            yield chunk


def put_part(
    client: httpx.Client, upload_id: str, path: Path, start: int, stop: int
) -> httpx.Response:
    headers = {**OCTET, "Content-Length": str(stop - start)}
    return client.put(
        f"/uploads/{upload_id}",
        params={"offset": start},
        content=chunks_of(path, start, stop),
        headers=headers,
    )


def resumable_push(client: httpx.Client, path: Path, part: int = 8 << 20) -> httpx.Response:
    """Start, send every part, complete: returns the completion answer."""
    size = path.stat().st_size
    started = client.post("/uploads", json={"sha256": sha256_file(path), "size": size})
    assert started.status_code in (200, 201), started.text
    session: dict[str, Any] = started.json()
    offset = session["offset"]
    while offset < size:
        answer = put_part(client, session["id"], path, offset, min(offset + part, size))
        assert answer.status_code == 200, answer.text
        offset = answer.json()["offset"]
    return client.post(f"/uploads/{session['id']}/complete")


def error(response: httpx.Response) -> dict[str, Any]:
    """The error body, checked to have the one shape every error has."""
    body = response.json()
    assert set(body) == {"code", "message", "detail"}, body
    assert isinstance(body["message"], str) and body["message"]
    return dict(body)


class RawConnection:
    """A plain socket speaking just enough HTTP/1.1 to send a request the way a broken
    client would: a declared length the body never reaches, a connection cut mid-body."""

    def __init__(self, url: str) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=60)

    def send_head(self, method: str, path: str, headers: dict[str, str]) -> None:
        lines = [
            f"{method} {path} HTTP/1.1",
            "Host: registry",
            *(f"{k}: {v}" for k, v in headers.items()),
        ]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_response(self) -> tuple[int, dict[str, Any]]:
        raw = b""
        while b"\r\n\r\n" not in raw:
            raw += self.sock.recv(65536)
        head, _, rest = raw.partition(b"\r\n\r\n")
        status = int(head.split(b" ")[1])
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        )
        while len(rest) < length:
            rest += self.sock.recv(65536)
        return status, json.loads(rest[:length])

    def close(self) -> None:
        self.sock.close()


def server_cli(
    monkeypatch: pytest.MonkeyPatch, data_dir: Path, database_url: str | None, *args: str
) -> Result:
    """``medvec-server ARGS`` with this data directory and database in the environment
    (no database URL: the data directory's SQLite file)."""
    monkeypatch.setenv("MEDVEC_DATA_DIR", str(data_dir))
    if database_url:
        monkeypatch.setenv("MEDVEC_DATABASE_URL", database_url)
    else:
        monkeypatch.delenv("MEDVEC_DATABASE_URL", raising=False)
    get_settings.cache_clear()
    try:
        return CliRunner().invoke(cli, list(args))
    finally:
        get_settings.cache_clear()


@contextmanager
def console_client(url: str, token: str) -> Iterator[httpx.Client]:
    """An HTTP client signed in to the console at ``url`` (what the login form does)."""
    with httpx.Client(base_url=url) as client:
        form = client.get("/console/login")
        nonce = re.search(r'name="login_nonce" value="([^"]+)"', form.text)
        assert nonce is not None, form.text
        answer = client.post("/console/login", data={"token": token, "login_nonce": nonce[1]})
        assert answer.status_code == 303, answer.text
        yield client
