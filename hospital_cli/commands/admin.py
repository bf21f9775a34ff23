"""``medvec admin ...``: hospitals, tokens, bases, benchmarks, merges, versions, quarantine
(admin token)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hospital_cli import output
from hospital_cli.client import RegistryClient
from hospital_cli.commands import admin_quarantine, admin_versions
from hospital_cli.commands.status import describe_ledger
from hospital_cli.errors import BaseRejectedError, CliError
from hospital_cli.options import JsonOpt, ProfileOpt, ServerOpt, TokenOpt, make_client
from hospital_cli.waiting import await_status

app = typer.Typer(help="Registry administration (needs an admin token).", no_args_is_help=True)
hospitals = typer.Typer(help="Create, list and remove hospitals.", no_args_is_help=True)
tokens = typer.Typer(help="Mint, list and revoke API tokens.", no_args_is_help=True)
app.add_typer(hospitals, name="hospitals")
app.add_typer(tokens, name="tokens")
app.add_typer(admin_versions.app)
app.add_typer(admin_quarantine.app, name="quarantine")

ExistingFile = Annotated[Path, typer.Argument(exists=True, dir_okay=False)]
NameOpt = Annotated[str, typer.Option("--name", help="A human-readable name.")]


def find_hospital(client: RegistryClient, reference: str) -> str:
    """The id of the hospital whose id or name is ``reference``."""
    matches = [h for h in client.list_hospitals() if reference in (h.get("id"), h.get("name"))]
    if not matches:
        raise CliError(f"no hospital '{reference}'", hint="see `medvec admin hospitals list`")
    return str(matches[0]["id"])


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
    columns = ["id", "name", "created_at", "removed_at"]
    output.listing(rows, columns, as_json=as_json, title="hospitals")


@hospitals.command("remove")
def remove_hospital(
    hospital: Annotated[str, typer.Argument(help="Hospital id or name.")],
    reason: Annotated[str | None, typer.Option(help="Why it leaves (audited).")] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    profile: ProfileOpt = None,
    server: ServerOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Remove a hospital: its tokens are revoked, and its vectors (kept for the lineage)
    leave default and automatic merges and the running sums.

    Example: medvec admin hospitals remove st-marys --reason "left the consortium" --yes
    """
    with make_client(profile, server, token) as client:
        hospital_id = find_hospital(client, hospital)
        if not yes and not typer.confirm(f"Remove hospital {hospital} ({hospital_id})?"):
            raise typer.Abort()
        record = client.remove_hospital(hospital_id, reason)
    output.record(record, as_json, f"hospital {hospital} removed at {record.get('removed_at')}")


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
        hospital_id = find_hospital(client, hospital) if hospital is not None else None
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


@hospitals.command("privacy-budget")
def privacy_budget(
    hospital: Annotated[str, typer.Argument(help="Hospital id or name.")],
    epsilon: Annotated[
        float | None, typer.Option("--epsilon", help="The most epsilon it may spend.")
    ] = None,
    delta: Annotated[float, typer.Option("--delta", help="The budget's delta.")] = 1e-5,
    clear: Annotated[bool, typer.Option("--clear", help="Remove the budget.")] = False,
    profile: ProfileOpt = None,
    server: ServerOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Set a hospital's privacy budget (or show its ledger); vectors over it are refused.

    Example: medvec admin hospitals privacy-budget st-marys --epsilon 8 --delta 1e-5
    """
    if clear and epsilon is not None:
        raise CliError("give --epsilon or --clear, not both")
    with make_client(profile, server, token) as client:
        hospital_id = find_hospital(client, hospital)
        if clear:
            ledger = client.clear_privacy_budget(hospital_id)
        elif epsilon is not None:
            ledger = client.set_privacy_budget(hospital_id, epsilon, delta)
        else:
            ledger = client.privacy_ledger(hospital_id)
    output.record(ledger, as_json, f"privacy: {describe_ledger(ledger)}")


@app.command("register-base")
def register_base(
    file: ExistingFile,
    name: NameOpt,
    profile: ProfileOpt = None,
    server: ServerOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
    wait: Annotated[
        float,
        typer.Option(help="Seconds to wait for a worker to verify the base (0: don't)."),
    ] = 300.0,
) -> None:
    """Register a base model file; a worker then checks its weights build its architecture.

    Vectors and merges against the base are refused (409) until it is ``ready``.

    Example: medvec admin register-base organ.safetensors --name organ-r18
    """
    with make_client(profile, server, token) as client:
        record = client.register_base(name, file)
        record = await_status(
            record, lambda: client.get_base(str(record["id"])), {"verifying"}, wait
        )
    status = record.get("status")
    if status == "rejected":
        raise BaseRejectedError(
            f"base {name} was rejected by the worker: {record.get('reason')}",
            hint="register a file whose weights build the architecture its spec names",
        )
    output.record(record, as_json, f"base {name} registered: {record.get('id')} ({status})")


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
