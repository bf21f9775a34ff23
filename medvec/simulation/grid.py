"""A resumable grid of simulations: datasets x hospitals x architectures x seeds.

Each cell is one :func:`~medvec.simulation.run.run_simulation` and its result is
written to its own JSON file under the output folder (temporary name, then rename)
as soon as it finishes. A rerun with the same settings reads the finished cells
instead of computing them again, so a grid of many hours survives an interruption
and resumes where it stopped; a rerun with other settings into the same folder is
refused rather than mixed with the old results.

:func:`aggregate` turns the cells into one row per (dataset, architecture, N) with
mean and standard deviation over the seeds, and :func:`side_by_side` puts seed
000's published local and federated accuracy beside them.
"""

from __future__ import annotations

import json
import os
import statistics
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from medvec.data.download import medmnist_num_classes
from medvec.errors import DatasetError, MedVecError
from medvec.simulation.run import SimulationResult, run_simulation
from medvec.simulation.seed000 import SEED000_TABLE3, seed000_cell
from medvec.simulation.sweep import SweepConfig, sweep_base

__all__ = [
    "CELLS_DIR",
    "Cell",
    "GridConfig",
    "GridOutcome",
    "aggregate",
    "cell_record",
    "finished_records",
    "run_grid",
    "side_by_side",
]

CELLS_DIR = "cells"
OURS_ONLY = "ours only (not in seed 000)"

EventFn = Callable[[str, dict[str, Any]], None]


class GridConfig(BaseModel):
    """The sweep's grid and settings, the seeds, and the generations the table reports."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    sweep: SweepConfig = SweepConfig()
    seeds: tuple[int, ...] = (0, 1, 2)
    report_generations: tuple[int, ...] = Field(default=(1, 3, 20), min_length=1)


@dataclass(frozen=True)
class Cell:
    dataset: str
    hospitals: int
    arch: str
    seed: int

    @property
    def filename(self) -> str:
        return f"{self.dataset}-{self.arch}-n{self.hospitals}-seed{self.seed}.json"


@dataclass
class GridOutcome:
    """Every finished cell's record, which of them this run computed, what was skipped."""

    records: list[dict[str, Any]] = field(default_factory=list)
    computed: list[Cell] = field(default_factory=list)
    reused: list[Cell] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def _cells(config: GridConfig, dataset: str) -> Iterator[Cell]:
    for arch in config.sweep.archs:
        for hospitals in config.sweep.hospitals:
            for seed in config.seeds:
                yield Cell(dataset, hospitals, arch, seed)


def _settings(config: GridConfig, cell: Cell) -> dict[str, Any]:
    """Everything that changes a cell's result, as it is stored in the cell's file."""
    sweep = config.sweep
    point = sweep.point.model_copy(
        update={"dataset": cell.dataset, "hospitals": cell.hospitals, "seed": cell.seed}
    )
    settings: dict[str, Any] = json.loads(
        json.dumps(
            {
                "arch": cell.arch,
                "point": point.model_dump(),
                "pretrain": sweep.pretrain.model_dump(),
                "image_size": sweep.image_size,
                "in_channels": sweep.in_channels,
                "stem": sweep.stem,
            }
        )
    )
    return settings


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def cell_record(result: SimulationResult, cell: Cell, settings: dict[str, Any]) -> dict[str, Any]:
    """One cell's JSON: settings, the per-generation merged accuracy, local and centralized.

    ``weighted_mean`` holds the weighted-mean merge (BatchNorm recalibrated) of every
    generation, ``promoted`` the version chosen on validation in each generation.
    """
    merged = [r for r in result.rows if r["kind"] == "merged"]
    generations = range(1, result.config.generations + 1)

    def series(select: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
        return [
            {
                "generation": g,
                "strategy": r["strategy"],
                "accuracy": r["accuracy"],
                "auc": r["auc"],
                "val_accuracy": r["val_accuracy"],
                "val_accuracy_uncalibrated": r["val_accuracy_uncalibrated"],
            }
            for g in generations
            for r in merged
            if r["generation"] == g and select(r)
        ]

    locals_ = [r for r in result.rows if r["kind"] == "local"]
    central = result.centralized()
    return {
        "cell": {
            "dataset": cell.dataset,
            "hospitals": cell.hospitals,
            "arch": cell.arch,
            "seed": cell.seed,
        },
        "settings": settings,
        "local_mean": result.local_mean(),
        "local_best": max(r["accuracy"] for r in locals_),
        "local_auc": result.local_mean("auc"),
        "weighted_mean": series(lambda r: r["strategy"] == "weighted_mean"),
        "promoted": series(lambda r: bool(r["promoted"])),
        "centralized": None if central is None else central["accuracy"],
        "central_auc": None if central is None else central["auc"],
        "seconds": round(result.seconds, 1),
        "rows": result.rows,
    }


def _read_cell(path: Path, settings: dict[str, Any]) -> dict[str, Any] | None:
    """The finished cell at ``path``; None when there is none yet."""
    if not path.is_file():
        return None
    record: dict[str, Any] = json.loads(path.read_text())
    if record.get("settings") != settings:
        raise MedVecError(
            f"{path} holds a result computed with other settings",
            hint="give another --out folder, or delete that folder to start the grid again",
        )
    return record


def run_grid(
    config: GridConfig,
    out_dir: Path,
    cache_dir: Path,
    *,
    datasets_dir: Path | None = None,
    device: str | None = None,
    on_event: EventFn | None = None,
) -> GridOutcome:
    """Run every cell not yet finished in ``out_dir/cells``; return every finished record.

    Events: ``skipped`` (a dataset not in the folder), ``reused`` (a finished cell read
    back), ``cell`` (a cell starts, with its position in the grid), ``done`` (a cell's
    record was written), and the simulation's own events.
    """
    emit = on_event or (lambda name, info: None)
    cells_dir = out_dir / CELLS_DIR
    cells_dir.mkdir(parents=True, exist_ok=True)
    outcome = GridOutcome()
    sweep = config.sweep
    total = len(sweep.datasets) * len(sweep.archs) * len(sweep.hospitals) * len(config.seeds)
    position = 0
    for dataset in sweep.datasets:
        try:
            num_classes = medmnist_num_classes(dataset, datasets_dir)
        except DatasetError as exc:
            outcome.skipped.append(f"{dataset}: {exc}")
            emit("skipped", {"dataset": dataset, "reason": str(exc)})
            position += total // len(sweep.datasets)
            continue
        for cell in _cells(config, dataset):
            position += 1
            settings = _settings(config, cell)
            path = cells_dir / cell.filename
            record = _read_cell(path, settings)
            if record is not None:
                outcome.records.append(record)
                outcome.reused.append(cell)
                emit("reused", {"cell": cell.filename, "of": f"{position}/{total}"})
                continue
            emit("cell", {"cell": cell.filename, "of": f"{position}/{total}"})
            base = sweep_base(
                sweep,
                dataset,
                cell.arch,
                num_classes,
                cache_dir,
                datasets_dir=datasets_dir,
                device=device,
            )
            point = sweep.point.model_copy(
                update={"dataset": dataset, "hospitals": cell.hospitals, "seed": cell.seed}
            )
            result = run_simulation(
                point, base, datasets_dir=datasets_dir, device=device, on_event=on_event
            )
            record = cell_record(result, cell, settings)
            _write_atomic(path, json.dumps(record, indent=1, default=str))
            outcome.records.append(record)
            outcome.computed.append(cell)
            emit("done", {"cell": cell.filename, "seconds": record["seconds"]})
    return outcome


def finished_records(out_dir: Path) -> list[dict[str, Any]]:
    """Every cell finished so far under ``out_dir`` (a grid may still be running)."""
    return [json.loads(path.read_text()) for path in sorted((out_dir / CELLS_DIR).glob("*.json"))]


def _stats(values: list[float]) -> dict[str, float | int | None]:
    if not values:
        return {"mean": None, "std": None, "n": 0}
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": statistics.fmean(values), "std": std, "n": len(values)}


def _at_generation(series: list[dict[str, Any]], generation: int) -> float | None:
    return next((s["accuracy"] for s in series if s["generation"] == generation), None)


def aggregate(
    records: list[dict[str, Any]], generations: tuple[int, ...] = (1, 3, 20)
) -> list[dict[str, Any]]:
    """One row per (dataset, arch, N): mean, std and count over seeds of the local mean,
    the weighted-mean merge at each of ``generations`` and the centralized model."""
    groups: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    for record in records:
        cell = record["cell"]
        groups.setdefault((cell["dataset"], cell["arch"], cell["hospitals"]), []).append(record)
    rows = []
    for (dataset, arch, hospitals), group in sorted(groups.items()):
        row: dict[str, Any] = {
            "dataset": dataset,
            "arch": arch,
            "hospitals": hospitals,
            "seeds": sorted(r["cell"]["seed"] for r in group),
            "local_mean": _stats([r["local_mean"] for r in group]),
        }
        for generation in generations:
            values = [_at_generation(r["weighted_mean"], generation) for r in group]
            row[f"merged_gen{generation}"] = _stats([v for v in values if v is not None])
        central = [r["centralized"] for r in group if r["centralized"] is not None]
        row["centralized"] = _stats(central)
        row["seconds"] = _stats([r["seconds"] for r in group])
        published = seed000_cell(dataset, hospitals)
        row["seed000_local"] = None if published is None else published[0]
        row["seed000_federated"] = None if published is None else published[1]
        rows.append(row)
    return rows


def _pm(stats: dict[str, Any]) -> str:
    if stats["mean"] is None:
        return "—"
    if stats["n"] == 1:
        return f"{stats['mean']:.3f}"
    return f"{stats['mean']:.3f} ± {stats['std']:.3f}"


def side_by_side(rows: list[dict[str, Any]], generations: tuple[int, ...] = (1, 3, 20)) -> str:
    """Markdown: seed 000's local → federated beside our rows (test accuracy, mean ± std
    over seeds); sets Table 3 does not have are labelled as ours only."""
    merged = [f"merged gen {g}" for g in generations]
    header = ["dataset", "N", "arch", "seeds", "seed 000 local → federated", "local mean"]
    header += [*merged, "centralized"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    ordered = sorted(rows, key=lambda r: (r["dataset"] not in SEED000_TABLE3, r["dataset"]))
    for row in ordered:
        if row["seed000_local"] is not None:
            published = f"{row['seed000_local']:.3f} → {row['seed000_federated']:.3f}"
        elif row["dataset"] in SEED000_TABLE3:
            published = "no cell at this N"
        else:
            published = OURS_ONLY
        cells = [
            row["dataset"],
            str(row["hospitals"]),
            row["arch"],
            str(len(row["seeds"])),
            published,
            _pm(row["local_mean"]),
            *(_pm(row[f"merged_gen{g}"]) for g in generations),
            _pm(row["centralized"]),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
