"""Start and stop an embedded registry + worker (``medvec-server --worker``) for the demo."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from hospital_cli.errors import CliError
from medvec.tokens import mint_token

READY_TIMEOUT = 120.0


@dataclass(frozen=True)
class RunningRegistry:
    url: str
    admin_token: str
    data_dir: Path
    log: Path
    pid: int


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_command() -> list[str]:
    """``medvec-server`` from this environment (beside the running interpreter first)."""
    beside = Path(sys.executable).with_name("medvec-server")
    found = str(beside) if beside.is_file() else shutil.which("medvec-server")
    if found is None:
        raise CliError(
            "medvec-server is not installed",
            hint="install the server and worker extras: pip install 'medvec[demo]'",
        )
    return [found]


def registry_policy(auto_merge_k: int, *, auto_promote: bool) -> dict[str, str]:
    """The registry's merge and promotion policy in the demo, set explicitly rather than
    left to the installed defaults: auto-merge after ``auto_merge_k`` new vectors (weighted
    mean); a hospital's vector of an older generation applied to the current base,
    weighted by ``(1 + staleness) ** -0.5``; the promotion gate on the overall metrics
    only (no per-class rule); and, with ``auto_promote``, every version that passes the
    gate on validation promoted by the registry itself, and every version it promotes
    made the base of the next generation (in lockstep the admin promotes, and the demo
    starts the generation). docs/merging.md measures why (the per-class rule locks a
    poor first version in production, excluded stale vectors lose a slow hospital's
    work)."""
    return {
        "MEDVEC_AUTO_MERGE": "true",
        "MEDVEC_AUTO_MERGE_K": str(auto_merge_k),
        "MEDVEC_AUTO_MERGE_STRATEGY": "weighted_mean",
        "MEDVEC_STALE_POLICY": "weight",
        "MEDVEC_STALENESS_POWER": "0.5",
        "MEDVEC_GATE_CLASS_METRICS": "[]",
        "MEDVEC_AUTO_PROMOTE": "true" if auto_promote else "false",
        # not the registry's default (merged): measured on the quick demo below lockstep
        # with it (docs/demo.md, "Asynchronous against lockstep")
        "MEDVEC_AUTO_GENERATION": "promoted",
    }


def server_env(
    data_dir: Path,
    admin_token: str,
    auto_merge_k: int,
    threads: int | None = None,
    *,
    auto_promote: bool = False,
) -> dict[str, str]:
    """The embedded default (SQLite + local blobs in ``data_dir``) with the demo's
    :func:`registry_policy`; ``threads`` caps the worker's CPU threads (it shares the
    machine with the hospitals)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDVEC_")}
    env.update(
        {
            "MEDVEC_ENVIRONMENT": "dev",
            "MEDVEC_DATA_DIR": str(data_dir),
            "MEDVEC_BOOTSTRAP_ADMIN_TOKEN": admin_token,
            **registry_policy(auto_merge_k, auto_promote=auto_promote),
            "PYTHONUNBUFFERED": "1",
        }
    )
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    if "MEDVEC_DATASETS_DIR" in os.environ:
        env["MEDVEC_DATASETS_DIR"] = os.environ["MEDVEC_DATASETS_DIR"]
    return env


def _wait_ready(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log.read_text(errors="replace").strip().splitlines()[-5:]
            raise CliError(
                f"medvec-server exited with code {process.returncode}: {' | '.join(tail)}",
                hint=f"full log: {log}",
            )
        try:
            if httpx.get(f"{url}/readyz", timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise CliError(f"medvec-server did not become ready in {READY_TIMEOUT:.0f} s", hint=str(log))


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


@contextmanager
def embedded_registry(
    data_dir: Path,
    *,
    auto_merge_k: int,
    threads: int | None = None,
    admin_token: str | None = None,
    auto_promote: bool = False,
    extra_env: dict[str, str] | None = None,
) -> Iterator[RunningRegistry]:
    """Run registry + worker on a free loopback port until the block ends (in its own
    process group, ``pid``). ``admin_token``: the one a registry in ``data_dir`` was
    started with before; a new one is minted by default. ``auto_promote``: the registry
    promotes every version that passes the gate. ``extra_env``: more settings
    (``MEDVEC_DATABASE_URL`` runs the same on PostgreSQL)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    token = admin_token or mint_token()
    log = data_dir / "server.log"
    env = {
        **server_env(data_dir, token, auto_merge_k, threads, auto_promote=auto_promote),
        **(extra_env or {}),
    }
    command = [*server_command(), "serve", "--worker", "--host", "127.0.0.1", "--port", str(port)]
    with log.open("ab") as sink:
        process = subprocess.Popen(
            command,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            cwd=data_dir,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, process, log)
        yield RunningRegistry(
            url=url, admin_token=token, data_dir=data_dir, log=log, pid=process.pid
        )
    finally:
        _stop(process)
