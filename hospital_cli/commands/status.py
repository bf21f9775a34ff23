"""``medvec status``: this hospital's vectors, their merge state, and the production model."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from hospital_cli import output
from hospital_cli.client import RegistryClient
from hospital_cli.errors import ApiError
from hospital_cli.options import JsonOpt, ProfileOpt, ServerOpt, TokenOpt, make_client

app = typer.Typer()

VECTOR_COLUMNS = ["id", "created_at", "status", "num_samples", "norm", "merged_into", "reason"]


@app.command()
def status(
    vector_status: Annotated[
        str | None, typer.Option("--status", help="Only vectors in this status.")
    ] = None,
    profile: ProfileOpt = None,
    server: ServerOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List this hospital's vectors and the production model with its evaluations.

    Example: medvec status --json
    """
    with make_client(profile, server, token) as client:
        vectors = client.list_vectors(status=vector_status)
        production = _production(client)
        ledger = _ledger(client)
    inputs = _production_inputs(production)
    vectors = [_with_merge_state(v, inputs, production) for v in vectors]
    if as_json:
        output.print_json({"vectors": vectors, "production": production, "privacy": ledger})
        return
    rows = [_vector_row(v) for v in vectors]
    output.listing(rows, VECTOR_COLUMNS, as_json=False, title="vectors")
    for vector in vectors:
        if vector.get("status") == "quarantined":
            output.warn(
                f"vector {vector.get('id')} is quarantined: {vector.get('reason')} — no merge "
                "takes it until an admin releases it; push a new vector to replace it"
            )
    if ledger is not None:
        output.note(f"privacy: {describe_ledger(ledger)}")
    if production is None:
        output.note("no production model yet")
        return
    version = production["version"]
    output.note(f"production model: {version.get('id')} ({version.get('name', '')})")
    evaluations = production.get("evaluations", [])
    output.listing(
        [_evaluation_row(e) for e in evaluations],
        ["benchmark", "split", "accuracy", "auc_macro", "f1_macro"],
        as_json=False,
        title="production evaluations",
    )


def _ledger(client: RegistryClient) -> dict[str, Any] | None:
    """This hospital's privacy ledger (None for an admin token, which has no hospital)."""
    hospital_id = client.whoami().get("hospital_id")
    return client.privacy_ledger(str(hospital_id)) if hospital_id else None


def describe_ledger(ledger: dict[str, Any]) -> str:
    """One line: the composed epsilon at delta, the vectors behind it, the budget."""
    epsilon = ledger.get("epsilon")
    spent = "unbounded (a vector without a guarantee)" if epsilon is None else f"{epsilon:.3f}"
    line = (
        f"epsilon {spent} at delta {ledger['delta']:g} over {ledger['vectors']} vectors "
        f"({ledger['private_vectors']} with differential privacy)"
    )
    if ledger.get("invalid_records"):
        line += f"; {ledger['invalid_records']} with an invalid privacy record"
    if ledger.get("budget_epsilon") is not None:
        line += f"; budget epsilon {ledger['budget_epsilon']:g} at delta {ledger['budget_delta']:g}"
    return line


def _production(client: RegistryClient) -> dict[str, Any] | None:
    try:
        version = client.get_version("production")
    except ApiError as exc:
        if exc.status == 404:
            return None
        raise
    try:
        evaluations = client.version_evaluations(str(version["id"]))
    except ApiError as exc:
        if exc.status not in (403, 404):
            raise
        evaluations = []
    return {"version": version, "evaluations": evaluations}


def _production_inputs(production: dict[str, Any] | None) -> dict[str, float]:
    """Vector id -> merge weight in the production model's lineage."""
    if production is None:
        return {}
    inputs = production["version"].get("inputs") or []
    return {str(i["vector_id"]): float(i.get("weight", 0.0)) for i in inputs}


def _with_merge_state(
    vector: dict[str, Any], inputs: dict[str, float], production: dict[str, Any] | None
) -> dict[str, Any]:
    """Mark whether the vector is merged into the production model, and with what weight."""
    weight = inputs.get(str(vector.get("id")))
    merged = weight is not None and production is not None
    return {
        **vector,
        "in_production": merged,
        "production_weight": weight,
        "merged_into": str(production["version"]["id"]) if merged and production else None,
    }


def _vector_row(vector: dict[str, Any]) -> dict[str, Any]:
    merged = vector.get("merged_into")
    weight = vector.get("production_weight")
    shown = f"production {merged[:8]} (weight {weight:.3f})" if merged else ""
    return {**vector, "merged_into": shown, "reason": vector.get("reason") or ""}


def _evaluation_row(evaluation: dict[str, Any]) -> dict[str, Any]:
    metrics = evaluation.get("metrics") or {}
    return {
        "benchmark": evaluation.get("benchmark_name") or evaluation.get("benchmark_id"),
        "split": evaluation.get("split"),
        **{k: metrics.get(k) for k in ("accuracy", "auc_macro", "f1_macro")},
    }
