"""The demo's results as rows: a rich table on the console, CSV and JSON on disk."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rich.table import Table

from hospital_cli.demo.state import DemoReport, MergedVersion

COLUMNS = ["generation", "model", "detail", "accuracy", "auc", "f1", "val_accuracy"]
METRICS = ("accuracy", "auc", "f1")  # test split; val_accuracy is what promotion chose by


def _lambda(params: dict[str, Any]) -> str:
    value = params.get("lambda")
    return f"lambda={value:.3g}" if isinstance(value, int | float) else ""


def _version_detail(version: MergedVersion) -> str:
    parts = [
        f"v{version.version_id[:8]}",
        f"{version.vectors} vectors" if version.vectors else "",
        _lambda(version.params),
        version.trigger,
        "PRODUCTION" if version.status == "production" else "",
    ]
    return ", ".join(p for p in parts if p)


def result_rows(report: DemoReport) -> list[dict[str, Any]]:
    """One row per local model, per merged version, plus the mean local and centralized."""
    rows: list[dict[str, Any]] = []
    locals_by_gen = {r.generation for r in report.locals}
    for generation in sorted(locals_by_gen | {v.generation for v in report.versions}):
        local = [r for r in report.locals if r.generation == generation and r.metrics]
        for r in sorted(local, key=lambda r: r.hospital):
            detail = f"{r.samples} images, pushed at {r.pushed_s:.0f} s"
            rows.append(_row(generation, r.hospital, detail, r.metrics))
        if local:
            mean = _mean([r.metrics for r in local])
            rows.append(_row(generation, "mean of local models", f"{len(local)} hospitals", mean))
        for v in report.versions:
            if v.generation == generation and v.metrics:
                model = f"merged: {v.strategy}"
                val = v.val_metrics.get("accuracy")
                rows.append(_row(generation, model, _version_detail(v), v.metrics, val))
    epochs = report.settings.epochs * report.settings.generations
    sizes = {r.hospital: r.samples for r in report.locals}
    for name, metrics in sorted(report.alone.items()):
        detail = f"{sizes.get(name, '?')} images, {epochs} epochs, no merging"
        rows.append(_row(None, f"{name} alone", detail, metrics))
    if report.alone:
        mean = _mean(list(report.alone.values()))
        rows.append(_row(None, "mean of hospitals alone", f"{len(report.alone)} hospitals", mean))
    if report.centralized:
        detail = f"all hospitals' images, {epochs} epochs"
        rows.append(_row(None, "centralized (union)", detail, report.centralized))
    return rows


def _mean(metrics: list[dict[str, float]]) -> dict[str, float]:
    return {k: sum(m[k] for m in metrics) / len(metrics) for k in METRICS}


def production_curve(report: DemoReport) -> list[tuple[float, float, str]]:
    """Production's test accuracy over wall time: ``(seconds after the hospitals started,
    accuracy, version id)`` at every promotion, oldest first."""
    accuracy = {v.version_id: v.metrics.get("accuracy") for v in report.versions}
    return [
        (float(p["t"]), float(a), str(p["version_id"]))
        for p in report.production
        if p.get("t") is not None and (a := accuracy.get(str(p["version_id"]))) is not None
    ]


def lockstep_floor(report: DemoReport) -> float | None:
    """For an asynchronous run, the least wall time the lockstep schedule would need for
    the same work: each of its generations waits for the straggler's job, which takes
    its slowdown times its training time (the mean of its jobs here). ``None`` without a
    straggler or once in lockstep."""
    settings = report.settings
    slow = {name for name, pace in report.paces.items() if pace.get("slowdown", 1.0) > 1}
    jobs = [r for r in report.locals if r.hospital in slow and r.vector_id and r.trained_s]
    if settings.lockstep or not jobs:
        return None
    slowdown = max(report.paces[name]["slowdown"] for name in slow)
    per_job = slowdown * sum(r.trained_s for r in jobs) / len(jobs)
    return round(settings.generations * per_job, 1)


def hospital_checks(report: DemoReport) -> dict[str, Any]:
    """What became of each hospital's work: per hospital, its role, the vectors it pushed,
    how many of them some version took and its first push (seconds after the start);
    and the share of all pushed vectors that no version took (a vector replaced by its
    own hospital's next one before any merge, or of a base no merge was made on)."""
    merged = {i for v in report.versions for i in v.inputs}
    hospitals: dict[str, Any] = {}
    pushed = [r for r in report.locals if r.vector_id]
    for name, pace in sorted(report.paces.items()):
        mine = [r for r in pushed if r.hospital == name]
        hospitals[name] = {
            "role": pace.get("role") or None,
            "pushed": len(mine),
            "merged": sum(r.vector_id in merged for r in mine),
            "first_push_s": min((r.pushed_s for r in mine), default=None),
        }
    unmerged = sum(r.vector_id not in merged for r in pushed)
    return {
        "hospitals": hospitals,
        "vectors_in_no_version": round(unmerged / len(pushed), 3) if pushed else None,
        "first_version_s": min(
            (v.created_s for v in report.versions if v.created_s is not None), default=None
        ),
    }


def summary(report: DemoReport) -> dict[str, float | str | None]:
    """The last promoted model against the references (test accuracy), and the schedule.

    ``gain_over_alone``: points above the mean hospital trained alone; ``gap_to_central``:
    points below the centralized model (negative when the merge is above it);
    ``schedule_s``: seconds from the hospitals' start to the end of the schedule.
    """
    promoted = next(
        (v for v in report.versions if report.promoted and v.version_id == report.promoted[-1]),
        None,
    )
    accuracy = promoted.metrics.get("accuracy") if promoted else None
    alone = _mean(list(report.alone.values()))["accuracy"] if report.alone else None
    central = report.centralized.get("accuracy")
    return {
        "schedule": "lockstep" if report.settings.lockstep else "asynchronous",
        "schedule_s": report.schedule_s,
        "images_trained": report.images_trained,
        "promotions": len(report.promoted),
        "promoted_version": promoted.version_id if promoted else None,
        "promoted_strategy": promoted.strategy if promoted else None,
        "promoted_accuracy": accuracy,
        "mean_alone_accuracy": alone,
        "best_alone_accuracy": max(m["accuracy"] for m in report.alone.values())
        if report.alone
        else None,
        "centralized_accuracy": central,
        "gain_over_alone": None if accuracy is None or alone is None else 100 * (accuracy - alone),
        "gap_to_central": None
        if accuracy is None or central is None
        else 100 * (central - accuracy),
    }


def _row(
    generation: int | None,
    model: str,
    detail: str,
    metrics: dict[str, float],
    val_accuracy: float | None = None,
) -> dict[str, Any]:
    return {
        "generation": generation,
        "model": model,
        "detail": detail,
        **{k: metrics.get(k) for k in METRICS},
        "val_accuracy": val_accuracy,
    }


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "—" if math.isnan(value) else f"{value:.3f}"
    return "" if value is None else str(value)


def rich_table(rows: list[dict[str, Any]], title: str) -> Table:
    table = Table(title=title)
    for column in COLUMNS:
        numeric = column in METRICS or column == "val_accuracy"
        table.add_column(column, justify="right" if numeric else "left")
    for row in rows:
        style = "bold" if row["model"].startswith(("mean", "centralized")) else None
        if row.get("detail", "").endswith("PRODUCTION"):
            style = "bold green"
        table.add_row(*(_fmt(row.get(c)) for c in COLUMNS), style=style)
    return table


def write_outputs(report: DemoReport, rows: list[dict[str, Any]], folder: Path) -> dict[str, Path]:
    """``results.csv``, ``results.json`` (rows, settings, timeline) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    csv_path, json_path = folder / "results.csv", folder / "results.json"
    with csv_path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(report.settings).items()}
    payload = {
        "settings": settings,
        "seconds": report.seconds,
        "base": report.base,
        "rows": rows,
        "locals": [asdict(r) for r in report.locals],
        "versions": [asdict(v) for v in report.versions],
        "alone": report.alone,
        "centralized": report.centralized,
        "summary": summary(report),
        "promoted": report.promoted,
        "production": report.production,
        "paces": report.paces,
        "budget_images": report.budget_images,
        "registry": report.registry,
        "lockstep_floor_s": lockstep_floor(report),
        "checks": hospital_checks(report),
        "timeline": report.timeline,
    }
    json_path.write_text(json.dumps(payload, indent=2, default=str))
    return {"csv": csv_path, "json": json_path}
