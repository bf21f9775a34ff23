"""SIGKILL of the registry process (``medvec-server serve``) mid-upload, mid-``complete``,
mid-merge and mid-evaluation, on the embedded default and on PostgreSQL + Redis; after
each restart the registry is whole again (:meth:`Fleet.assert_recovered`)."""

from __future__ import annotations

import fcntl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.models import EvaluationStatus, JobStatus
from medvec.hashing import sha256_file
from tests.faults.world import OCTET, Fleet

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.redis]

CHUNK = 1 << 20


class CutStream:
    """A request, sent from a thread, whose body stops after ``data[:cut]`` and then
    (``wait``) waits until :meth:`finish` (the server having been killed meanwhile): a
    client whose server lost power mid-body."""

    def __init__(self, data: bytes, cut: int, *, wait: bool = True) -> None:
        self.data, self.cut = data, cut
        self.released = threading.Event()
        if not wait:
            self.released.set()
        self.thread: threading.Thread | None = None

    def _body(self) -> Iterator[bytes]:
        for start in range(0, self.cut, CHUNK):
            yield self.data[start : min(start + CHUNK, self.cut)]
        self.released.wait(120)

    def send(
        self,
        client: httpx.Client,
        method: str,
        url: str,
        answers: list[httpx.Response] | None = None,
        **kwargs: Any,
    ) -> None:
        """Send from a thread; the response, if one comes, is appended to ``answers``."""

        def run() -> None:
            try:
                response = client.request(
                    method, url, content=self._body(), headers=OCTET, **kwargs
                )
            except httpx.HTTPError:
                return  # the server died under the request: what the test is about
            if answers is not None:
                answers.append(response)

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def running(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def finish(self) -> None:
        self.released.set()
        if self.thread is not None:
            self.thread.join(60)


def _largest(files: list[Path]) -> int:
    return max((f.stat().st_size for f in files if f.exists()), default=0)


def test_api_killed_mid_upload_then_the_upload_resumes(fleet: Fleet) -> None:
    resumable, oneshot = fleet.vector_file("upload-r"), fleet.vector_file("upload-o")
    data, size = resumable.read_bytes(), resumable.stat().st_size
    with fleet.hospital("upload-r") as client:
        session = client.post("/uploads", json={"sha256": sha256_file(resumable), "size": size})
        assert session.status_code == 201, session.text
        upload_id = session.json()["id"]
        earlier = set(fleet.staging().glob("*.tmp"))
        part = CutStream(data, size // 2)
        part.send(client, "PUT", f"/uploads/{upload_id}", params={"offset": 0})
        with fleet.hospital("upload-o") as other:
            cut_oneshot = CutStream(oneshot.read_bytes(), oneshot.stat().st_size // 2)
            cut_oneshot.send(other, "POST", "/vectors")
            fleet.poll(
                "both bodies to reach the server",
                lambda: (
                    _largest([fleet.staging() / f"upload-{upload_id}.part"]) >= CHUNK
                    and _largest(list(set(fleet.staging().glob("*.tmp")) - earlier)) >= CHUNK
                ),
            )
            fleet.server.kill()
            part.finish()
            cut_oneshot.finish()
    fleet.server.start()

    with fleet.hospital("upload-r") as client:
        held = client.get(f"/uploads/{upload_id}")
        assert held.status_code == 200, held.text
        offset = held.json()["offset"]
        assert 0 < offset <= size // 2  # what reached the disk before the kill is kept
        rest = client.put(
            f"/uploads/{upload_id}", params={"offset": offset}, content=data[offset:], headers=OCTET
        )
        assert rest.status_code == 200, rest.text
        fleet.record(client.post(f"/uploads/{upload_id}/complete"))
    fleet.push("upload-o", oneshot)  # the cut one-shot upload, sent again
    fleet.assert_recovered()


def _completing(part: Path) -> bool:
    """Whether a ``complete`` holds the part file's lock (it hashes and validates under it)."""
    try:
        with part.open("rb") as handle:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
    except FileNotFoundError:
        return False  # moved into the blob store: the completion got past its checks
    return False


def test_api_killed_mid_complete_then_complete_again(fleet: Fleet) -> None:
    path = fleet.vector_file("complete")
    with fleet.hospital("complete") as client:
        session = client.post(
            "/uploads", json={"sha256": sha256_file(path), "size": path.stat().st_size}
        )
        upload_id = session.json()["id"]
        sent = client.put(
            f"/uploads/{upload_id}", params={"offset": 0}, content=path.read_bytes(), headers=OCTET
        )
        assert sent.status_code == 200, sent.text
        part = fleet.staging() / f"upload-{upload_id}.part"
        done = threading.Event()

        def complete() -> None:
            try:
                client.post(f"/uploads/{upload_id}/complete")
            except httpx.HTTPError:
                pass
            done.set()

        threading.Thread(target=complete, daemon=True).start()
        fleet.poll("the completion to start", lambda: _completing(part) or done.is_set(), 0.001)
        assert not done.is_set(), "the completion ended before it could be interrupted"
        fleet.server.kill()
        done.wait(60)
    fleet.server.start()
    with fleet.hospital("complete") as client:
        fleet.record(client.post(f"/uploads/{upload_id}/complete"))
    fleet.assert_recovered()


def _push_stopped_in_the_window(fleet: Fleet, hospital: str, attempts: int = 30) -> Path:
    """Push new vectors until one is caught with its file renamed into the blob store and
    its row not yet committed: the server is stopped (SIGSTOP) the moment the blob
    appears and killed if the row is not there; a push that committed first is recorded
    and the server continues. Returns the file of the push killed in the window."""
    for _ in range(attempts):
        path = fleet.vector_file(hospital)
        blob = fleet.blob_path(sha256_file(path))
        client = fleet.hospital(hospital)
        answers: list[httpx.Response] = []
        cut = CutStream(path.read_bytes(), path.stat().st_size, wait=False)
        cut.send(client, "POST", "/vectors", answers=answers)
        while not blob.exists() and cut.running():
            pass  # the window is a few milliseconds: no sleep
        fleet.server.pause()
        if blob.exists() and not fleet.has_vector(blob.name):
            fleet.server.kill()
            cut.finish()
            client.close()
            return path
        fleet.server.resume()
        cut.finish()
        client.close()
        fleet.record(answers[0])
    raise AssertionError(f"no push was caught between its rename and its commit in {attempts}")


def test_api_killed_between_a_blob_rename_and_its_row_commit(fleet: Fleet) -> None:
    """The blob is in the store, its row never committed and the client got no answer:
    the client sends the file again and that push claims the blob; no orphan is left."""
    path = _push_stopped_in_the_window(fleet, "window")
    fleet.server.start()
    digest = sha256_file(path)
    assert fleet.blob_path(digest).exists()
    problems = fleet.fsck()["problems"]
    assert [(f["kind"], f["sha256"]) for f in problems] == [("orphan_blob", digest)]
    fleet.push("window", path)  # the retry: 201, on the blob already in place
    fleet.assert_recovered()


def _three_vectors(fleet: Fleet, prefix: str) -> list[str]:
    return [fleet.push(f"{prefix}-{n}")["id"] for n in range(3)]


def test_api_killed_mid_merge_then_the_merge_completes(fleet: Fleet) -> None:
    job_id = fleet.merge(_three_vectors(fleet, "merge"))
    fleet.poll("the merge to run", lambda: fleet.job_status(job_id) is not JobStatus.QUEUED)
    fleet.server.kill()
    fleet.server.start()
    fleet.assert_recovered()


def test_api_killed_mid_evaluation_then_it_is_evaluated(fleet: Fleet) -> None:
    """Needs evaluation leases on the embedded default: an evaluation left ``running`` by a
    killed process is queued again once its lease ran out."""
    job_id = fleet.merge(_three_vectors(fleet, "evaluate"))
    fleet.poll("the merge", lambda: fleet.job_status(job_id) is JobStatus.SUCCEEDED)
    fleet.poll("an evaluation to run", lambda: fleet.evaluations(EvaluationStatus.RUNNING) > 0)
    fleet.server.kill()
    fleet.server.start()
    fleet.assert_recovered()
