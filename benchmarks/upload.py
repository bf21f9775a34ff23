"""Upload benchmark: registry memory and throughput while receiving large uploads.

Starts ``medvec-server`` in a subprocess (embedded SQLite, temporary data directory),
then for each size sends one resumable-upload part of that many random bytes
(``PUT /api/v1/uploads/{id}``: streamed to disk, hashed, fsynced) and completes it
(sha256 verified; validation refuses the random bytes, which is expected here). It
samples the server's resident memory (psutil) throughout, and measures the same bytes
copied over a raw loopback socket into a file (recv -> write -> fsync) as the floor,
and sent with the same client to a bare ASGI app under uvicorn that drops the body
(the HTTP stack's own ceiling, no disk).

    python benchmarks/upload.py --sizes-mb 50,100,250,500 --repeats 3

Targets: peak server memory flat in upload size; throughput >= 50% of the raw copy.

``--concurrent N`` measures instead what a registry replica pays to take real pushes:
a ResNet-18 base is registered (and verified, as a worker would, from this process),
then N hospitals push a valid data vector each, all at once (one-shot ``POST
/vectors``: streamed, hashed, validated against the base, stored). It prints the
server's resident memory idle (after start-up and registration) and at its peak under
the N pushes, and the throughput (vector bytes accepted per second); the registry runs
on a fresh PostgreSQL database (on ``MEDVEC_TEST_PG_ADMIN``'s server, as the tests). With
``--baseline-src DIR`` the same run first serves the registry from another source tree
(today's ``main``), so the two lines compare in one run:

    python benchmarks/upload.py --concurrent 40 --baseline-src ../main
"""

from __future__ import annotations

import argparse
import hashlib
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psutil

CHUNK = 1 << 20
MIB = 1 << 20


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_file(path: Path, size: int) -> str:
    digest = hashlib.sha256()
    with path.open("wb") as handle:
        left = size
        while left:
            block = os.urandom(min(CHUNK, left))
            handle.write(block)
            digest.update(block)
            left -= len(block)
    return digest.hexdigest()


def file_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as handle:
        while block := handle.read(CHUNK):
            yield block


class RssSampler:
    """Peak resident memory of a process, sampled every few milliseconds in a thread."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.005)

    def __enter__(self) -> RssSampler:
        self.peak = self.process.memory_info().rss
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)


@contextmanager
def registry(
    workdir: Path, max_bytes: int, src: Path | None = None, database_url: str | None = None
) -> Iterator[tuple[str, str, int]]:
    """A registry subprocess, its code from ``src`` (default: this tree); yields (url, token,
    pid). It runs in ``workdir`` so that no source tree is importable from its directory."""
    port, token = _free_port(), "mv_" + secrets.token_urlsafe(32)
    env = {
        **os.environ,
        "MEDVEC_DATA_DIR": str(workdir / "registry"),
        "MEDVEC_BOOTSTRAP_ADMIN_TOKEN": token,
        "MEDVEC_MAX_UPLOAD_BYTES": str(max_bytes),
    }
    env.pop("MEDVEC_DATABASE_URL", None)
    env.pop("MEDVEC_REDIS_URL", None)
    env["PYTHONPATH"] = str((src or Path(__file__).resolve().parents[1]).resolve())
    if database_url is not None:  # migrated by the tree's own `medvec-server migrate`
        env["MEDVEC_DATABASE_URL"] = database_url
        migrate = [sys.executable, "-c", "from app.cli import main; main()", "migrate"]
        subprocess.run(migrate, env=env, cwd=workdir, check=True, capture_output=True)
    command = [
        sys.executable,
        "-c",
        "from app.cli import main; main()",
        "serve",
        "--port",
        str(port),
        "--no-worker",
        "--log-level",
        "warning",
    ]
    process = subprocess.Popen(command, env=env, cwd=workdir)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(1200):
            if process.poll() is not None:
                raise RuntimeError(f"the registry exited during start-up ({process.returncode})")
            try:
                if httpx.get(f"{url}/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        yield url, token, process.pid
    finally:
        process.terminate()
        process.wait(timeout=30)


async def drain_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """A bare ASGI app that reads a request body and drops it: the transport's ceiling."""
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})


def serve_drain(port: int) -> None:
    import uvicorn

    uvicorn.run(drain_app, host="127.0.0.1", port=port, log_level="warning")


@contextmanager
def drain_server() -> Iterator[str]:
    port = _free_port()
    command = [sys.executable, __file__, "--serve-drain", str(port)]
    process = subprocess.Popen(command)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                httpx.put(url, content=b"")
                break
            except httpx.TransportError:
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def drain_upload(url: str, path: Path) -> float:
    size = path.stat().st_size
    started = time.perf_counter()
    httpx.put(url, content=file_chunks(path), headers={"Content-Length": str(size)}, timeout=600)
    return time.perf_counter() - started


def hospital_token(url: str, admin_token: str, name: str = "bench") -> str:
    headers = {"Authorization": f"Bearer {admin_token}"}
    with httpx.Client(base_url=f"{url}/api/v1", headers=headers) as admin:
        hospital = admin.post("/hospitals", json={"name": name}).json()
        body = {"name": name, "role": "hospital", "hospital_id": hospital["id"]}
        return str(admin.post("/tokens", json=body).json()["token"])


def registry_upload(url: str, token: str, path: Path, sha256: str) -> tuple[float, float]:
    """(seconds for the PUT of the whole file, seconds for complete)."""
    size = path.stat().st_size
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=f"{url}/api/v1", headers=headers, timeout=600) as client:
        session = client.post("/uploads", json={"sha256": sha256, "size": size}).json()
        started = time.perf_counter()
        answer = client.put(
            f"/uploads/{session['id']}",
            params={"offset": 0},
            content=file_chunks(path),
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
        )
        sent = time.perf_counter() - started
        if answer.status_code != 200 or answer.json()["offset"] != size:
            raise RuntimeError(f"upload failed: {answer.status_code} {answer.text[:300]}")
        started = time.perf_counter()
        completed = client.post(f"/uploads/{session['id']}/complete")
        verdict = time.perf_counter() - started
        if completed.status_code != 422:  # random bytes are not a vector
            raise RuntimeError(f"unexpected verdict {completed.status_code}: {completed.text}")
    return sent, verdict


def _raw_receiver(listener: socket.socket, target: Path) -> None:
    connection, _ = listener.accept()
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    with connection, target.open("wb", buffering=0) as out:
        while received := connection.recv_into(buffer):
            out.write(view[:received])
        os.fsync(out.fileno())
        connection.sendall(b"ok")


def raw_copy(path: Path, target: Path) -> float:
    """Seconds to send the file over a loopback socket into a file on the same disk."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        receiver = threading.Thread(target=_raw_receiver, args=(listener, target))
        receiver.start()
        started = time.perf_counter()
        with socket.create_connection(listener.getsockname()) as sender:
            for block in file_chunks(path):
                sender.sendall(block)
            sender.shutdown(socket.SHUT_WR)
            sender.recv(2)
        elapsed = time.perf_counter() - started
        receiver.join()
    target.unlink()
    return elapsed


def make_base_file(path: Path) -> Path:
    from medvec.models import ModelSpec, get_model, save_model_file

    spec = ModelSpec(arch="resnet18", num_classes=8, in_channels=3, image_size=28)
    return save_model_file(path, get_model(spec.arch, **spec.builder_kwargs()), spec)


def make_vectors(base_path: Path, base: dict[str, Any], names: list[str], work: Path) -> list[Path]:
    """One valid vector per hospital name (same values; the names make the bytes differ)."""
    import torch

    from medvec.models import read_model_spec
    from medvec.vectors import VectorMetadata, save_vector
    from medvec.vectors.lazy import LazyTensorReader

    with LazyTensorReader(base_path) as reader:
        shapes = {
            k: reader.info(k).shape for k in reader.keys() if reader.info(k).is_floating_point
        }
    generator = torch.Generator().manual_seed(0)
    tensors = {k: 1e-3 * torch.randn(shape, generator=generator) for k, shape in shapes.items()}
    paths = []
    for name in names:
        metadata = VectorMetadata(
            base_id=base["id"],
            base_sha256=base["sha256"],
            hospital=name,
            num_samples=100,
            spec=read_model_spec(base_path),
        )
        paths.append(save_vector(work / f"vector-{name}.safetensors", tensors, metadata))
    return paths


def register_ready_base(
    url: str, admin_token: str, path: Path, data_dir: Path, database_url: str
) -> dict[str, Any]:
    """Register the base; where bases carry a status, verify it as a worker would."""
    headers = {"Authorization": f"Bearer {admin_token}", "Content-Type": "application/octet-stream"}
    with httpx.Client(base_url=f"{url}/api/v1", timeout=600) as admin:
        base = admin.post(
            "/bases", params={"name": "bench"}, content=path.read_bytes(), headers=headers
        )
        base.raise_for_status()
    record: dict[str, Any] = base.json()
    if record.get("status") == "verifying":
        from sqlalchemy.orm import Session

        from app.db import make_engine
        from app.storage import LocalBlobStore
        from worker.bases import verify_base

        engine = make_engine(database_url)
        with Session(engine) as session, session.begin():
            verify_base(session, LocalBlobStore(data_dir / "blobs"), record["id"])
        engine.dispose()
    return record


def push_all(url: str, pushes: list[tuple[str, Path]]) -> float:
    """Push every (token, vector) at once, one thread each; seconds until all are accepted."""
    failures: list[str] = []

    def push(token: str, path: Path) -> None:
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/octet-stream"}
        with path.open("rb") as body:
            answer = httpx.post(
                f"{url}/api/v1/vectors", content=body, headers=headers, timeout=1800
            )
        if answer.status_code != 201:
            failures.append(f"{answer.status_code} {answer.text[:200]}")

    threads = [threading.Thread(target=push, args=pair) for pair in pushes]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise RuntimeError(f"{len(failures)} pushes failed, first: {failures[0]}")
    return time.perf_counter() - started


def concurrent_run(work: Path, count: int, src: Path | None) -> dict[str, float]:
    """Idle and peak RSS (bytes) of one registry (on a fresh PostgreSQL database, as
    replicas run) under ``count`` concurrent pushes; MB/s."""
    from tests.integration.services import fresh_postgres_database

    base_path = make_base_file(work / "base.safetensors")
    with (
        fresh_postgres_database() as db_url,
        registry(work, 1 << 30, src, db_url) as (url, admin, pid),
    ):
        base = register_ready_base(url, admin, base_path, work / "registry", db_url)
        names = [f"bench-{index:03d}" for index in range(count)]
        tokens = [hospital_token(url, admin, name) for name in names]
        vectors = make_vectors(base_path, base, names, work)
        time.sleep(1.0)
        idle = psutil.Process(pid).memory_info().rss
        with RssSampler(pid) as sampler:
            seconds = push_all(url, list(zip(tokens, vectors, strict=True)))
        total = sum(path.stat().st_size for path in vectors)
        for path in vectors:
            path.unlink()
    return {"idle": idle, "peak": sampler.peak, "mb_s": total / 1e6 / seconds, "seconds": seconds}


def concurrent_main(args: argparse.Namespace) -> None:
    print(f"load average at start: {os.getloadavg()[0]:.1f} ({os.cpu_count()} CPUs)")
    runs: dict[str, dict[str, float]] = {}
    sources = ([("baseline", args.baseline_src)] if args.baseline_src else []) + [("this", None)]
    for label, src in sources:
        with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
            runs[label] = concurrent_run(Path(tmp), args.concurrent, src)
    print(
        f"{'registry':>9} {'idle RSS MiB':>12} {'peak RSS MiB':>12} {'MB/s':>7} "
        f"{'seconds':>8}  ({args.concurrent} concurrent pushes)"
    )
    for label, run in runs.items():
        print(
            f"{label:>9} {run['idle'] / MIB:>12.0f} {run['peak'] / MIB:>12.0f} "
            f"{run['mb_s']:>7.1f} {run['seconds']:>8.1f}"
        )
    if "baseline" in runs:
        ratio = {k: runs["this"][k] / runs["baseline"][k] for k in ("idle", "peak", "mb_s")}
        print(
            f"this / baseline: idle RSS {ratio['idle']:.2f}, peak RSS {ratio['peak']:.2f}, "
            f"throughput {ratio['mb_s']:.2f}"
        )
    print(f"load average at end: {os.getloadavg()[0]:.1f}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes-mb", default="50,100,250,500")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--serve-drain", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--concurrent", type=int, default=0, help="N hospitals push at once")
    parser.add_argument("--baseline-src", type=Path, default=None, help="source tree to compare")
    args = parser.parse_args(argv)
    if args.serve_drain:
        serve_drain(args.serve_drain)
        return
    if args.concurrent:
        concurrent_main(args)
        return
    sizes = [int(s) * MIB for s in args.sizes_mb.split(",")]
    with (
        tempfile.TemporaryDirectory(dir=args.workdir) as tmp,
        registry(Path(tmp), max(sizes) + MIB) as (url, admin, pid),
        drain_server() as drain_url,
    ):
        work = Path(tmp)
        token = hospital_token(url, admin)
        baseline = psutil.Process(pid).memory_info().rss
        print(f"server RSS after start-up: {baseline / MIB:.0f} MiB")
        print(
            f"{'size MiB':>8} {'peak RSS MiB':>12} {'+RSS MiB':>8} {'registry MB/s':>13} "
            f"{'raw MB/s':>9} {'ratio':>6} {'bare ASGI MB/s':>14} {'complete s':>10}"
        )
        for size in sizes:
            path = work / f"upload-{size}.bin"
            sha256 = make_file(path, size)
            best = {"put": float("inf"), "raw": float("inf"), "asgi": float("inf")}
            done, peak = 0.0, 0
            for _ in range(args.repeats):
                with RssSampler(pid) as sampler:
                    put, verdict = registry_upload(url, token, path, sha256)
                peak, done = max(peak, sampler.peak), max(done, verdict)
                best["put"] = min(best["put"], put)
                best["raw"] = min(best["raw"], raw_copy(path, work / "raw.bin"))
                best["asgi"] = min(best["asgi"], drain_upload(drain_url, path))
            path.unlink()
            mb = size / 1e6
            print(
                f"{size // MIB:>8} {peak / MIB:>12.0f} {(peak - baseline) / MIB:>8.1f} "
                f"{mb / best['put']:>13.0f} {mb / best['raw']:>9.0f} "
                f"{best['raw'] / best['put']:>6.2f} {mb / best['asgi']:>14.0f} {done:>10.2f}"
            )


if __name__ == "__main__":
    main()
