"""``medvec base pull | list``: fetch the shared base model into the local cache."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hospital_cli import output
from hospital_cli.bases import base_cache, pull_base
from hospital_cli.options import JsonOpt, ProfileOpt, ServerOpt, TokenOpt, make_client

app = typer.Typer(help="The shared base model: pull it, list generations.", no_args_is_help=True)


@app.command()
def pull(
    base_id: Annotated[
        str, typer.Option("--id", help="Base id (default: the current generation).")
    ] = "current",
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Also copy it here.")] = None,
    profile: ProfileOpt = None,
    server: ServerOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Download the current base, verify its sha256 and cache it by sha256.

    Example: medvec base pull            (then `medvec train` uses it)
    """
    with make_client(profile, server, token) as client:
        record, path, cached = pull_base(client, base_id, cache=base_cache())
    if out is not None:
        from hospital_cli.downloads import copy_to

        copy_to(path, out)
    if as_json:
        output.print_json({"base": record, "path": str(out or path), "cached": cached})
        return
    state = "already cached" if cached else "downloaded and verified"
    output.success(f"base {record.get('name')} ({record['id']}) {state}: {out or path}")


@app.command("list")
def list_bases(
    profile: ProfileOpt = None,
    server: ServerOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List the registered bases (generations).

    Example: medvec base list --json
    """
    with make_client(profile, server, token) as client:
        rows = client.list_bases()
    columns = ["id", "name", "arch", "generation", "sha256", "created_at"]
    output.listing(rows, columns, as_json=as_json, title="bases")
