"""``medvec admin merge | versions | evaluate | contributions | leaderboard | promote | rollback |
generation``.

The model side of administration: merge jobs, the versions they make, their
evaluations, and which version hospitals get (production) or train from (the base).
"""

from __future__ import annotations

import json
import time
from enum import StrEnum
from typing import Annotated, Any

import typer

from hospital_cli import output
from hospital_cli.errors import ApiError, CliError
from hospital_cli.options import JsonOpt, ProfileOpt, ServerOpt, TokenOpt, make_client

app = typer.Typer()

VersionArg = Annotated[str, typer.Argument(help="Version id.")]


class Stale(StrEnum):
    """The registry's ``selection.stale`` (app/schemas/merges.py)."""

    weight = "weight"
    exclude = "exclude"


@app.command()
def merge(
    strategy: Annotated[
        str, typer.Option(help="weighted_mean, task_arithmetic, ties, dare ...")
    ] = "weighted_mean",
    params: Annotated[
        str, typer.Option(help='Strategy parameters as JSON, e.g. {"lambda": 0.5}.')
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
    stale: Annotated[
        Stale | None,
        typer.Option(
            help="A hospital whose newest vector is of an older generation: weight (applied "
            "to this base, weighted by (1 + staleness) ** -power) or exclude. Default: the "
            "registry's, weight."
        ),
    ] = None,
    staleness_power: Annotated[
        float | None,
        typer.Option(
            "--staleness-power", min=0, help="The power of --stale weight (registry default 0.5)."
        ),
    ] = None,
    calibration: Annotated[
        str,
        typer.Option(
            help="Images to recompute BatchNorm statistics on: auto (a benchmark's val "
            "split), none, or a benchmark id."
        ),
    ] = "auto",
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
      medvec admin merge --strategy ties --calibration none
      medvec admin merge --stale exclude          # only vectors made against this base
    """
    try:
        parsed = json.loads(params)
    except ValueError as exc:
        raise CliError(f"--params is not JSON: {exc}") from exc
    if not isinstance(parsed, dict):
        raise CliError('--params must be a JSON object, e.g. {"lambda": 0.5}')
    selection: dict[str, Any] = {}
    if vectors:
        selection["vector_ids"] = [v.strip() for v in vectors.split(",")]
    if stale is not None:
        selection["stale"] = stale.value
    if staleness_power is not None:
        selection["staleness_power"] = staleness_power
    with make_client(profile, server, token) as client:
        base = base_id or str(client.get_base("current")["id"])
        accepted = client.request_merge(
            base,
            strategy,
            params=parsed,
            selection=selection or None,
            benchmark_id=benchmark,
            calibration=calibration,
        )
        job_id = str(accepted.get("job_id") or accepted.get("id"))
        job = {**client.get_merge(job_id), "job_id": job_id}
        deadline = time.monotonic() + wait
        while job.get("status") in ("queued", "running") and time.monotonic() < deadline:
            time.sleep(1.0)
            job = {**client.get_merge(job_id), "job_id": job_id}
    output.record(
        job, as_json, f"merge job {job_id}: {job.get('status')} {job.get('version_id') or ''}"
    )
    if job.get("status") == "failed":
        raise CliError(f"merge job {job_id} failed: {job.get('error')}")


@app.command()
def jobs(
    profile: ProfileOpt = None,
    server: ServerOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List merge jobs and the versions they made.

    Example: medvec admin jobs --json
    """
    with make_client(profile, server, token) as client:
        rows = client.list_merges()
    columns = ["id", "status", "strategy", "attempts", "version_id", "error", "created_at"]
    output.listing(rows, columns, as_json=as_json, title="merge jobs")


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
def evaluate(
    version_id: VersionArg,
    benchmark: Annotated[str, typer.Option("--benchmark", help="Benchmark id.")],
    split: Annotated[str, typer.Option(help="test, val or train.")] = "test",
    profile: ProfileOpt = None,
    server: ServerOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Run a version's evaluation on a benchmark split (again); a worker does the work.

    One already queued or running is left as it is; a completed or failed one is queued
    again (the audit log keeps the metrics it replaces).

    Example: medvec admin evaluate 9b1e... --benchmark 4f57... --split val
    """
    with make_client(profile, server, token) as client:
        record = client.request_evaluation(version_id, benchmark, split)
    message = (
        f"evaluation of {version_id} on {record.get('benchmark_name')}/{split}: "
        f"{record.get('status')} (see `medvec admin versions`)"
    )
    output.record(record, as_json, message)


@app.command()
def contributions(
    version_id: VersionArg,
    compute: Annotated[
        bool, typer.Option("--compute", help="Ask a worker to compute them (again) first.")
    ] = False,
    profile: ProfileOpt = None,
    server: ServerOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Each input hospital's contribution to a weighted-mean or task-arithmetic version:
    the validation metric with everyone minus the metric without that hospital (accuracy,
    macro AUC, per-class sensitivity). A positive number: the merge is better with it.

    Example: medvec admin contributions 9b1e... --compute
    """
    with make_client(profile, server, token) as client:
        if compute:
            client.request_contributions(version_id)
            output.success(f"contributions of {version_id} queued; run this again to read them")
            return
        record = client.contributions(version_id)
    if as_json:
        output.print_json(record)
        return
    rows = [
        {
            "hospital": h["hospital_id"],
            "vector": h["vector_id"][:8],
            "accuracy": f"{h['accuracy']:+.4f}",
            "auc": "-" if h["auc_macro"] is None else f"{h['auc_macro']:+.4f}",
            "sensitivity": " ".join("-" if s is None else f"{s:+.3f}" for s in h["sensitivity"]),
        }
        for h in record["hospitals"]
    ]
    everyone = record["all"]
    output.table(
        rows,
        ["hospital", "vector", "accuracy", "auc", "sensitivity"],
        title=f"contributions on {record['split']} (all: accuracy {everyone['accuracy']:.4f})",
    )


@app.command()
def promote(
    version_id: Annotated[str, typer.Argument(help="Version id.")],
    stage: Annotated[str, typer.Option(help="staging or production.")] = "production",
    force: Annotated[
        bool, typer.Option(help="Promote past the gate (or without an evaluation); audited.")
    ] = False,
    profile: ProfileOpt = None,
    server: ServerOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Promote a version. Production needs the promotion gate: no worse than production
    on the gate's metrics, overall and per class, and every class's sensitivity at or
    above the floor; a refusal prints every check as a table.

    Example: medvec admin promote 9b1e... --stage production
    """
    with make_client(profile, server, token) as client:
        try:
            record = client.promote(version_id, stage, force=force)
        except ApiError as exc:
            if exc.code == "gate_failed" and isinstance(exc.detail, dict) and not as_json:
                _gate_table(exc.detail)
            raise
    output.record(record, as_json, f"version {version_id} is now {record.get('status', stage)}")


GATE_COLUMNS = ["check", "metric", "class", "candidate", "production", "threshold", "result"]


def _gate_table(detail: dict[str, Any]) -> None:
    """Every check of a refused promotion, failed ones first."""
    checks = sorted(detail.get("checks") or [], key=lambda c: bool(c.get("passed")))
    rows = [
        {
            "check": check.get("kind"),
            "metric": check.get("metric"),
            "class": check.get("class_index"),
            "candidate": _rounded(check.get("candidate")),
            "production": _rounded(check.get("production")),
            "threshold": _rounded(check.get("threshold")),
            "result": "pass" if check.get("passed") else "FAIL",
        }
        for check in checks
    ]
    title = f"promotion gate on {detail.get('split')} of benchmark {detail.get('benchmark_id')}"
    output.table(rows, GATE_COLUMNS, title=title)


def _rounded(value: Any) -> float | None:
    return None if value is None else round(float(value), 4)


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
    output.record(record, as_json, f"production is now {record.get('id')}")


@app.command()
def leaderboard(
    metric: Annotated[
        str, typer.Option(help="accuracy, auc_macro, f1_macro, ece ...")
    ] = "accuracy",
    benchmark: Annotated[
        str | None, typer.Option("--benchmark", help="Benchmark id (default: all).")
    ] = None,
    profile: ProfileOpt = None,
    server: ServerOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Rank the evaluated versions by a metric, with how well each merge's inputs merged.

    cosine is the mean pairwise cosine similarity of the input vectors; val_combined and
    val_recalibrated the validation accuracy with averaged and with recomputed BatchNorm
    statistics (empty when not measured).

    Example: medvec admin leaderboard --metric auc_macro --json
    """
    with make_client(profile, server, token) as client:
        rows = client.leaderboard(metric, benchmark)
    if as_json:
        output.print_json(rows)
        return
    table = [{**row, **_mergeability(row.get("mergeability"))} for row in rows]
    columns = ["rank", "version_id", "version_status", "strategy", "benchmark_name", "split"]
    merge_columns = ["cosine", "val_combined", "val_recalibrated"]
    output.listing(
        table, [*columns, "value", *merge_columns], as_json=False, title=f"leaderboard: {metric}"
    )


@app.command()
def generation(
    version_id: VersionArg,
    profile: ProfileOpt = None,
    server: ServerOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Start a new generation: the version becomes the base hospitals pull and train from.

    Example: medvec admin generation 9b1e...    (hospitals then run `medvec base pull`)
    """
    with make_client(profile, server, token) as client:
        record = client.start_generation(version_id)
    message = f"base {record.get('id')} (generation {record.get('generation')}) is now current"
    output.record(record, as_json, message)


def _mergeability(record: dict[str, Any] | None) -> dict[str, Any]:
    """The leaderboard's mergeability columns, rounded for reading."""
    record = record or {}
    names = {
        "cosine": "mean_cosine",
        "val_combined": "val_accuracy_combined",
        "val_recalibrated": "val_accuracy_recalibrated",
    }
    return {
        column: None if record.get(key) is None else round(float(record[key]), 4)
        for column, key in names.items()
    }


def _metrics(evaluations: list[dict[str, Any]]) -> dict[str, Any]:
    """The test split's metrics (versions also have a val evaluation, to choose by)."""
    for evaluation in evaluations:
        if evaluation.get("split") == "test" and evaluation.get("metrics"):
            return {k: evaluation["metrics"].get(k) for k in ("accuracy", "auc_macro", "f1_macro")}
    return {}
