"""Chunked, resumable push of a vector file through the registry's upload sessions.

Hash first; ask the registry to start or resume the session for ``(sha256, size)``;
send only the bytes it lacks, one part at a time from one open file; keep local resume
state per sha256 (upload id, offset, file mtime) and drop it when the file changed or the
session is gone. Network errors are retried with exponential backoff, each retry asking
the registry where it stands first.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from hospital_cli.client import RegistryClient
from hospital_cli.errors import ApiError, CliError
from medvec.hashing import sha256_file

PART_SIZE = 8 << 20


@dataclass
class UploadState:
    sha256: str
    size: int
    mtime_ns: int
    upload_id: str
    offset: int


@dataclass
class PushResult:
    sha256: str
    size: int
    upload_id: str | None
    resumed_from: int
    bytes_sent: int
    vector: dict[str, Any]
    already_known: bool


class ResumeStore:
    """Local resume state: one small JSON file per sha256 under ``folder``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def _path(self, sha256: str) -> Path:
        return self.folder / f"{sha256}.json"

    def load(self, sha256: str, size: int, mtime_ns: int) -> UploadState | None:
        try:
            state = UploadState(**json.loads(self._path(sha256).read_text()))
        except (OSError, ValueError, TypeError):
            return None
        if state.size != size or state.mtime_ns != mtime_ns:
            self.drop(sha256)
            return None
        return state

    def save(self, state: UploadState) -> None:
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self._path(state.sha256).with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(state)))
        os.replace(tmp, self._path(state.sha256))

    def drop(self, sha256: str) -> None:
        self._path(sha256).unlink(missing_ok=True)


def _checked_session(session: dict[str, Any], sha256: str, size: int) -> tuple[str, int]:
    """Check the registry's answer before trusting it with our bytes."""
    offset = session.get("offset")
    if session.get("sha256") not in (None, sha256) or session.get("size") not in (None, size):
        raise CliError("the registry answered for a different file; retry `medvec push`")
    if not isinstance(offset, int) or not 0 <= offset <= size or not session.get("id"):
        raise CliError(f"the registry sent an invalid upload session: {session}")
    return str(session["id"]), offset


class Uploader:
    """Pushes one file; ``on_progress(done, total)`` reports bytes the registry holds."""

    def __init__(
        self,
        client: RegistryClient,
        resume: ResumeStore,
        *,
        part_size: int = PART_SIZE,
        retries: int = 5,
        backoff: float = 1.0,
        on_progress: Callable[[int, int], None] | None = None,
    ) -> None:
        self.client = client
        self.resume = resume
        self.part_size = part_size
        self.retries = retries
        self.backoff = backoff
        self.on_progress = on_progress or (lambda done, total: None)

    def _retrying(self, call: Callable[[], Any]) -> Any:
        for attempt in range(self.retries + 1):
            try:
                return call()
            except (httpx.TransportError, ApiError) as exc:
                transient = isinstance(exc, httpx.TransportError) or exc.status >= 500
                if not transient or attempt == self.retries:
                    raise
                time.sleep(self.backoff * 2**attempt)
        raise AssertionError("unreachable")

    def _start(self, sha256: str, size: int, mtime_ns: int) -> dict[str, Any]:
        state = self.resume.load(sha256, size, mtime_ns)
        if state is not None:
            try:
                return self._retrying(lambda: self.client.get_upload(state.upload_id))
            except ApiError as exc:
                if exc.status not in (404, 410):
                    raise
                self.resume.drop(sha256)  # the registry expired the partial upload
        return self._retrying(lambda: self.client.create_upload(sha256, size))

    def push(self, path: Path, sha256: str | None = None) -> PushResult:
        stat = path.stat()
        size = stat.st_size
        sha256 = sha256 or sha256_file(path)
        session = self._start(sha256, size, stat.st_mtime_ns)
        if session.get("vector_id"):
            vector = self._retrying(lambda: self.client.get_vector(str(session["vector_id"])))
            self.on_progress(size, size)
            return PushResult(sha256, size, session.get("id"), size, 0, vector, True)
        upload_id, offset = _checked_session(session, sha256, size)
        resumed_from, sent = offset, 0
        self.on_progress(offset, size)
        with path.open("rb") as stream:
            while offset < size:
                state = UploadState(sha256, size, stat.st_mtime_ns, upload_id, offset)
                self.resume.save(state)
                before = offset
                offset = self._send_part(stream, upload_id, offset, size)
                sent += max(offset - before, 0)
                self.on_progress(offset, size)
        try:
            vector = self._retrying(lambda: self.client.complete_upload(upload_id))
        except ApiError as exc:
            if exc.status < 500:
                self.resume.drop(sha256)
            raise
        self.resume.drop(sha256)
        return PushResult(sha256, size, upload_id, resumed_from, sent, vector, False)

    def _send_part(self, stream: Any, upload_id: str, offset: int, size: int) -> int:
        """Send the part at ``offset``; return the offset the registry now holds."""
        for attempt in range(self.retries + 1):
            length = min(self.part_size, size - offset)
            stream.seek(offset)
            try:
                answer = self.client.put_upload_part(upload_id, offset, stream, length)
                return _new_offset(answer, offset, size)
            except ApiError as exc:
                if exc.status == 409:  # the registry holds a different offset: follow it
                    return _server_offset(self.client, upload_id, size)
                if exc.status < 500 or attempt == self.retries:
                    raise
            except httpx.TransportError:
                if attempt == self.retries:
                    raise
            time.sleep(self.backoff * 2**attempt)
            offset = self._retrying(lambda: _server_offset(self.client, upload_id, size))
            if offset >= size:
                return offset
        raise AssertionError("unreachable")


def _new_offset(answer: dict[str, Any], before: int, size: int) -> int:
    offset = answer.get("offset")
    if not isinstance(offset, int) or not before < offset <= size:
        raise CliError(f"the registry answered an invalid offset {offset!r} after {before}")
    return offset


def _server_offset(client: RegistryClient, upload_id: str, size: int) -> int:
    offset = client.get_upload(upload_id).get("offset")
    if not isinstance(offset, int) or not 0 <= offset <= size:
        raise CliError(f"the registry reports an invalid offset {offset!r}")
    return offset
