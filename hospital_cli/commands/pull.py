"""``medvec pull``: download a model version, verify its sha256, rename it into place."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hospital_cli import output
from hospital_cli.downloads import download_verified
from hospital_cli.errors import CliError
from hospital_cli.options import JsonOpt, ProfileOpt, ServerOpt, TokenOpt, make_client

app = typer.Typer()


@app.command()
def pull(
    version: Annotated[
        str | None, typer.Option("--version", "-v", help="Version id (admins: any version).")
    ] = None,
    production: Annotated[
        bool, typer.Option("--production", help="The production model (the default).")
    ] = False,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Destination file (default: <id>.safetensors)."),
    ] = None,
    profile: ProfileOpt = None,
    server: ServerOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Download a model version (production by default) and verify its sha256.

    Example: medvec pull --production -o models/current.safetensors
    """
    if version and production:
        raise CliError("give either --version or --production, not both")
    version_id = version or "production"
    with make_client(profile, server, token) as client:
        record = client.get_version(version_id)
        target = out or Path(f"{record['id']}.safetensors")
        with output.progress_bytes(transient=True) as bar:
            task = bar.add_task(f"pull {record['id']}", total=None)
            sha256 = download_verified(
                client,
                f"/versions/{version_id}/download",
                target,
                expected_sha256=record.get("sha256"),
                on_total=lambda total: bar.update(task, total=total),
                on_bytes=lambda n: bar.advance(task, n),
            )
    if as_json:
        output.print_json({"version": record, "path": str(target), "sha256": sha256})
        return
    output.success(
        f"version {record['id']} ({record.get('status', '')}) → {target}, sha256 verified"
    )
