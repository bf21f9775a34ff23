"""``medvec admin quarantine list | release | reject``: vectors screening held back."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from hospital_cli import output
from hospital_cli.options import JsonOpt, ProfileOpt, ServerOpt, TokenOpt, make_client

app = typer.Typer(
    help="Vectors screening quarantined: list, release, reject.", no_args_is_help=True
)

VectorArg = Annotated[str, typer.Argument(help="Vector id.")]
COLUMNS = ["id", "hospital_id", "base_id", "norm", "cosine", "val_accuracy", "reason"]


def _row(vector: dict[str, Any]) -> dict[str, Any]:
    screening = vector.get("screening") or {}
    val = screening.get("val") or {}
    cosine = screening.get("cosine_to_peers")
    return {
        **vector,
        "cosine": None if cosine is None else round(float(cosine), 4),
        "val_accuracy": None if val.get("accuracy") is None else round(float(val["accuracy"]), 4),
    }


@app.command("list")
def list_quarantined(
    base_id: Annotated[str | None, typer.Option("--base", help="Only this base's.")] = None,
    profile: ProfileOpt = None,
    server: ServerOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List quarantined vectors with their screening statistics and the reason.

    Example: medvec admin quarantine list --json
    """
    with make_client(profile, server, token) as client:
        rows = client.list_quarantined(base_id)
    if as_json:
        output.print_json(rows)
        return
    output.listing([_row(r) for r in rows], COLUMNS, as_json=False, title="quarantined vectors")


@app.command()
def release(
    vector_id: VectorArg,
    note: Annotated[str | None, typer.Option(help="Why it is released (audited).")] = None,
    profile: ProfileOpt = None,
    server: ServerOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Release a quarantined vector: merges may take it again.

    Example: medvec admin quarantine release 3c2d... --note "new scanner, checked by hand"
    """
    with make_client(profile, server, token) as client:
        record = client.release_vector(vector_id, note)
    output.record(record, as_json, f"vector {vector_id} released: {record.get('status')}")


@app.command()
def reject(
    vector_id: VectorArg,
    reason: Annotated[str, typer.Option(help="Why, as the hospital will read it.")],
    profile: ProfileOpt = None,
    server: ServerOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Reject a quarantined vector for good.

    Example: medvec admin quarantine reject 3c2d... --reason "labels flipped"
    """
    with make_client(profile, server, token) as client:
        record = client.reject_vector(vector_id, reason)
    output.record(record, as_json, f"vector {vector_id} rejected")
