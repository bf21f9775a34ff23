"""``medvec admin ...``: hospitals, tokens, bases, benchmarks, merges, versions (admin token)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from hospital_cli import output
from hospital_cli.errors import CliError
from hospital_cli.options import JsonOpt, ProfileOpt, ServerOpt, TokenOpt, make_client

app = typer.Typer(help="Registry administration (needs an admin token).", no_args_is_help=True)
hospitals = typer.Typer(help="Create and list hospitals.", no_args_is_help=True)
tokens = typer.Typer(help="Mint, list and revoke API tokens.", no_args_is_help=True)
app.add_typer(hospitals, name="hospitals")
app.add_typer(tokens, name="tokens")

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
    _show(record, as_json, f"hospital {name} created: {record.get('id')}")


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
    _show(record, as_json, f"token {record.get('id')} (shown once): {record.get('token')}")


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
    _show(record, as_json, f"base {name} registered: {record.get('id')}")


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
    _show(record, as_json, f"benchmark {name} registered: {record.get('id')}")


@app.command()
def merge(
    strategy: Annotated[
        str, typer.Option(help="weighted_mean, task_arithmetic, ties, dare ...")
    ] = "weighted_mean",
    params: Annotated[
        str, typer.Option(help='Strategy parameters as JSON, e.g. {"lam": 0.5}.')
    ] = "{}",
    base_id: Annotated[
        str | None, typer.Option("--base", help="Base id (default: current).")
    ] = None,
    benchmark: Annotated[
        str | None, typer.Option("--benchmark", help="Benchmark id to evaluate on.")
    ] = None,
    vectors: Annotated[
        str | None,
        typer.Option(help="Comma-separated vector ids (default: each hospital's latest)."),
    ] = None,
    wait: Annotated[float, typer.Option(help="Seconds to wait for the job (0: don't).")] = 0.0,
    profile: ProfileOpt = None,
    server: ServerOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Request a merge of the latest vectors (the same inputs give the same job).

    Examples:
      medvec admin merge --strategy ties --params '{"lambda": 1.0, "density": 0.2}' --wait 600
      medvec admin merge --strategy task_arithmetic --params '{"lambda": "tune"}' --benchmark B
    """
    try:
        parsed = json.loads(params)
    except ValueError as exc:
        raise CliError(f"--params is not JSON: {exc}") from exc
    if not isinstance(parsed, dict):
        raise CliError('--params must be a JSON object, e.g. {"lambda": 0.5}')
    selection = {"vector_ids": [v.strip() for v in vectors.split(",")]} if vectors else None
    with make_client(profile, server, token) as client:
        base = base_id or str(client.get_base("current")["id"])
        accepted = client.request_merge(
            base, strategy, params=parsed, selection=selection, benchmark_id=benchmark
        )
        job_id = str(accepted.get("job_id") or accepted.get("id"))
        job = {**client.get_merge(job_id), "job_id": job_id}
        deadline = time.monotonic() + wait
        while job.get("status") in ("queued", "running") and time.monotonic() < deadline:
            time.sleep(1.0)
            job = {**client.get_merge(job_id), "job_id": job_id}
    _show(job, as_json, f"merge job {job_id}: {job.get('status')} {job.get('version_id') or ''}")
    if job.get("status") == "failed":
        raise CliError(f"merge job {job_id} failed: {job.get('error')}")


@app.command()
def versions(
    status: Annotated[
        str | None, typer.Option(help="candidate, staging, production, archived.")
    ] = None,
    profile: ProfileOpt = None,
    server: ServerOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List model versions with their metrics.

    Example: medvec admin versions --status candidate
    """
    with make_client(profile, server, token) as client:
        rows = client.list_versions(status)
        for row in rows:
            row["evaluations"] = client.version_evaluations(str(row["id"]))
    if as_json:
        output.print_json(rows)
        return
    table = [{**row, **_metrics(row["evaluations"])} for row in rows]
    columns = ["id", "status", "strategy", "created_at", "accuracy", "auc_macro", "f1_macro"]
    output.listing(table, columns, as_json=False, title="versions")


@app.command()
def promote(
    version_id: Annotated[str, typer.Argument(help="Version id.")],
    stage: Annotated[str, typer.Option(help="staging or production.")] = "production",
    force: Annotated[bool, typer.Option(help="Promote without a completed evaluation.")] = False,
    profile: ProfileOpt = None,
    server: ServerOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Promote a version.

    Example: medvec admin promote 9b1e... --stage production
    """
    with make_client(profile, server, token) as client:
        record = client.promote(version_id, stage, force=force)
    _show(record, as_json, f"version {version_id} is now {record.get('status', stage)}")


@app.command()
def rollback(
    profile: ProfileOpt = None,
    server: ServerOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Archive the production version and restore the previous one.

    Example: medvec admin rollback
    """
    with make_client(profile, server, token) as client:
        record = client.rollback()
    _show(record, as_json, f"production is now {record.get('id')}")


def _metrics(evaluations: list[dict[str, Any]]) -> dict[str, Any]:
    for evaluation in evaluations:
        if evaluation.get("metrics"):
            return {k: evaluation["metrics"].get(k) for k in ("accuracy", "auc_macro", "f1_macro")}
    return {}


def _show(record: dict[str, Any], as_json: bool, message: str) -> None:
    if as_json:
        output.print_json(record)
    else:
        output.success(message)
