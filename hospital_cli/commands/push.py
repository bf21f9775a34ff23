"""``medvec push VECTOR``: hash, upload resumably, and print the registry's verdict."""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer

from hospital_cli import output
from hospital_cli.client import RegistryClient
from hospital_cli.config import cache_dir
from hospital_cli.errors import EXIT_REJECTED, ApiError
from hospital_cli.options import JsonOpt, ProfileOpt, ServerOpt, TokenOpt, make_client
from hospital_cli.uploads import PART_SIZE, ResumeStore, Uploader

app = typer.Typer()

PENDING = {"received", "validating", "pending"}


@app.command()
def push(
    vector: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, help="The .safetensors vector file.")
    ],
    part_size: Annotated[
        int, typer.Option("--part-size", min=1, help="Bytes per upload part.")
    ] = PART_SIZE,
    retries: Annotated[int, typer.Option(min=0, help="Retries per part on network errors.")] = 5,
    wait: Annotated[
        float, typer.Option(help="Seconds to wait for the validation verdict (0: don't).")
    ] = 60.0,
    profile: ProfileOpt = None,
    server: ServerOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Push a data vector; an interrupted push resumes where it stopped.

    Pushing the same bytes again is harmless: the registry answers with the same vector.

    Example: medvec push vectors/pneumonia-2026-11-23.safetensors
    """
    from medvec.hashing import sha256_file

    sha256 = sha256_file(vector)
    with make_client(profile, server, token) as client, output.progress_bytes() as bar:
        task = bar.add_task(f"push {vector.name}", total=vector.stat().st_size)
        uploader = Uploader(
            client,
            ResumeStore(cache_dir() / "uploads"),
            part_size=part_size,
            retries=retries,
            on_progress=lambda done, total: bar.update(task, completed=done, total=total),
        )
        try:
            result = uploader.push(vector, sha256)
        except ApiError as exc:
            if exc.status == 422:
                bar.stop()
                _rejected(exc.message, exc.detail, as_json)
            raise
        bar.stop()
        record = _await_verdict(client, result.vector, wait)
    status = str(record.get("status", "received"))
    if as_json:
        output.print_json({**asdict(result), "vector": record})
    elif status == "rejected":
        pass
    else:
        where = "resumed at byte " + str(result.resumed_from) if result.resumed_from else "sent"
        known = " (already known: same bytes, same vector)" if result.already_known else ""
        output.success(
            f"vector {record.get('id')} {status}{known}; sha256 {sha256[:12]}…, "
            f"{result.bytes_sent} bytes {where}"
        )
    if status == "rejected":
        _rejected(str(record.get("reason") or record.get("status_reason") or ""), None, as_json)


def _await_verdict(client: RegistryClient, vector: dict[str, Any], wait: float) -> dict[str, Any]:
    """Poll the vector until validation leaves ``received`` (when a worker validates)."""
    deadline = time.monotonic() + wait
    delay = 0.5
    while str(vector.get("status")) in PENDING and time.monotonic() < deadline:
        time.sleep(delay)
        delay = min(delay * 2, 5.0)
        vector = client.get_vector(str(vector["id"]))
    return vector


def _rejected(reason: str, detail: Any, as_json: bool) -> None:
    if as_json:
        output.print_json({"status": "rejected", "reason": reason, "detail": detail})
    output.error(f"rejected by the registry: {reason}")
    raise typer.Exit(EXIT_REJECTED)
