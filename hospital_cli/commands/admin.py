"""``medvec admin ...``: hospitals, tokens, bases, benchmarks, merges, versions (admin token)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hospital_cli import output
from hospital_cli.commands import admin_versions
from hospital_cli.errors import CliError
from hospital_cli.options import JsonOpt, ProfileOpt, ServerOpt, TokenOpt, make_client

app = typer.Typer(help="Registry administration (needs an admin token).", no_args_is_help=True)
hospitals = typer.Typer(help="Create and list hospitals.", no_args_is_help=True)
tokens = typer.Typer(help="Mint, list and revoke API tokens.", no_args_is_help=True)
app.add_typer(hospitals, name="hospitals")
app.add_typer(tokens, name="tokens")
app.add_typer(admin_versions.app)

ExistingFile = Annotated[Path, typer.Argument(exists=True, dir_okay=False)]
NameOpt = Annotated[str, typer.Option("--name", help="A human-readable name.")]


@hospitals.command("create")
def create_hospital(
    name: Annotated[str, typer.Argument(help="Hospital name.")],
    profile: ProfileOpt = None,
    server: ServerOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a hospital.

    Example: medvec admin hospitals create st-marys
    """
    with make_client(profile, server, token) as client:
        record = client.create_hospital(name)
    output.record(record, as_json, f"hospital {name} created: {record.get('id')}")


@hospitals.command("list")
def list_hospitals(
    profile: ProfileOpt = None,
    server: ServerOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List hospitals.

    Example: medvec admin hospitals list --json
    """
    with make_client(profile, server, token) as client:
        rows = client.list_hospitals()
    output.listing(rows, ["id", "name", "created_at"], as_json=as_json, title="hospitals")


@tokens.command("create")
def create_token(
    name: NameOpt,
    role: Annotated[str, typer.Option("--role", help="hospital or admin.")] = "hospital",
    hospital: Annotated[str | None, typer.Option("--hospital", help="Hospital id or name.")] = None,
    profile: ProfileOpt = None,
    server: ServerOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Mint a token (shown once).

    Example: medvec admin tokens create --name ct --hospital st-marys
    """
    with make_client(profile, server, token) as client:
        hospital_id = None
        if hospital is not None:
            matches = [
                h for h in client.list_hospitals() if hospital in (h.get("id"), h.get("name"))
            ]
            if not matches:
                raise CliError(
                    f"no hospital '{hospital}'", hint="see `medvec admin hospitals list`"
                )
            hospital_id = str(matches[0]["id"])
        record = client.create_token(name, role, hospital_id)
    output.record(record, as_json, f"token {record.get('id')} (shown once): {record.get('token')}")


@tokens.command("list")
def list_tokens(
    profile: ProfileOpt = None,
    server: ServerOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List tokens (never their secrets).

    Example: medvec admin tokens list
    """
    with make_client(profile, server, token) as client:
        rows = client.list_tokens()
    columns = ["id", "name", "role", "hospital_id", "created_at", "revoked_at"]
    output.listing(rows, columns, as_json=as_json, title="tokens")


@tokens.command("revoke")
def revoke_token(
    token_id: Annotated[str, typer.Argument(help="Token id.")],
    profile: ProfileOpt = None,
    server: ServerOpt = None,
    token: TokenOpt = None,
) -> None:
    """Revoke a token.

    Example: medvec admin tokens revoke 3f2c...
    """
    with make_client(profile, server, token) as client:
        client.revoke_token(token_id)
    output.success(f"token {token_id} revoked")


@app.command("register-base")
def register_base(
    file: ExistingFile,
    name: NameOpt,
    profile: ProfileOpt = None,
    server: ServerOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Register a base model file.

    Example: medvec admin register-base organ.safetensors --name organ-r18
    """
    with make_client(profile, server, token) as client:
        record = client.register_base(name, file)
    output.record(record, as_json, f"base {name} registered: {record.get('id')}")


@app.command("register-benchmark")
def register_benchmark(
    file: ExistingFile,
    name: NameOpt,
    profile: ProfileOpt = None,
    server: ServerOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Register a held-out .npz benchmark.

    Example: medvec admin register-benchmark pneu.npz --name pneu
    """
    with make_client(profile, server, token) as client:
        record = client.register_benchmark(name, file)
    output.record(record, as_json, f"benchmark {name} registered: {record.get('id')}")


@app.command("benchmarks")
def list_benchmarks(
    profile: ProfileOpt = None,
    server: ServerOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List the registered held-out benchmarks.

    Example: medvec admin benchmarks --json
    """
    with make_client(profile, server, token) as client:
        rows = client.list_benchmarks()
    columns = ["id", "name", "num_classes", "sizes", "sha256", "created_at"]
    output.listing(rows, columns, as_json=as_json, title="benchmarks")


@app.command()
def audit(
    action: Annotated[
        str | None, typer.Option(help="Only this action, e.g. version.promoted.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="Newest N events.")] = 100,
    profile: ProfileOpt = None,
    server: ServerOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show the audit log: who changed what, when, from which address.

    Example: medvec admin audit --action version.promoted --json
    """
    with make_client(profile, server, token) as client:
        rows = client.audit(action=action, limit=limit)
    columns = ["created_at", "actor", "action", "target_type", "target_id", "ip"]
    output.listing(rows, columns, as_json=as_json, title="audit events")
