"""The reproduction sweep: datasets x numbers of hospitals x architectures.

Each point is one :func:`~medvec.simulation.run.run_simulation` from a base made by
:mod:`medvec.pretrain` (cached, one per architecture and target). Results are
appended to a CSV after every point so that a long sweep that is stopped keeps
what it measured; datasets that are not available are reported, not guessed.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from medvec.data.download import medmnist_num_classes
from medvec.errors import DatasetError
from medvec.models import ModelSpec
from medvec.pretrain import PretrainConfig, StepFn, ensure_base, pretrain_arch
from medvec.simulation.run import SimulationConfig, run_simulation, summary_row

__all__ = [
    "SUMMARY_COLUMNS",
    "SweepConfig",
    "SweepOutcome",
    "markdown_table",
    "run_sweep",
    "sweep_base",
]

SUMMARY_COLUMNS = [
    "dataset",
    "arch",
    "hospitals",
    "partition",
    "generations",
    "local_mean",
    "local_best",
    "wm_gen1",
    "weighted_mean",
    "task_arithmetic",
    "ta_lambda",
    "ties",
    "median",
    "promoted",
    "centralized",
    "local_auc",
    "wm_auc",
    "central_auc",
    "cosine",
    "seconds",
]

EventFn = Callable[[str, dict[str, Any]], None]


class SweepConfig(BaseModel):
    """The grid and the settings every point shares."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    datasets: tuple[str, ...] = ("pneumoniamnist", "bloodmnist")
    hospitals: tuple[int, ...] = (5, 10, 20, 50)
    archs: tuple[str, ...] = ("resnet18",)
    point: SimulationConfig = SimulationConfig()
    pretrain: PretrainConfig = PretrainConfig()
    image_size: int = Field(default=28, ge=8)
    in_channels: int = Field(default=3, ge=1)
    stem: Literal["auto", "small", "strided", "imagenet"] = "auto"


@dataclass
class SweepOutcome:
    rows: list[dict[str, Any]] = field(default_factory=list)
    detail: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def _append_csv(path: Path, row: dict[str, Any]) -> None:
    new = not path.exists()
    with path.open("a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=SUMMARY_COLUMNS, extrasaction="ignore")
        if new:
            writer.writeheader()
        writer.writerow(row)


def base_pretraining(config: SweepConfig, dataset: str, arch: str) -> PretrainConfig:
    """How the base of ``arch`` for ``dataset`` is pretrained: the sweep's pretraining
    without ``dataset`` among its sources, for ``arch``'s pretraining network at the
    sweep's input shape and stem."""
    return config.pretrain.excluding(dataset).model_copy(
        update={
            "arch": pretrain_arch(arch),
            "stem": config.stem,
            "in_channels": config.in_channels,
            "image_size": config.image_size,
        }
    )


def sweep_base(
    config: SweepConfig,
    dataset: str,
    arch: str,
    num_classes: int,
    cache_dir: Path,
    *,
    datasets_dir: Path | None = None,
    device: str | None = None,
    on_step: StepFn | None = None,
) -> Path:
    """The cached base of ``arch`` for ``dataset``, pretrained on the other sets
    (``on_step`` as ``ensure_base`` calls it, while it pretrains).

    One base per (dataset, architecture) whatever the simulation seed: the seed of a
    point varies the hospitals' splits and training, not the shared starting point.
    """
    spec = ModelSpec(
        arch=arch,
        num_classes=num_classes,
        in_channels=config.in_channels,
        image_size=config.image_size,
        stem=config.stem,
    )
    pretrain = base_pretraining(config, dataset, arch)
    return ensure_base(
        spec, cache_dir, config=pretrain, datasets_dir=datasets_dir, device=device, on_step=on_step
    )


def _pretrain_events(emit: EventFn, base: str) -> StepFn:
    """``ensure_base``'s step callback as ``pretrain`` events: ``base``, ``step``,
    ``total`` and the trainer's statistics."""

    def on_step(step: int, total: int, **stats: Any) -> None:
        emit("pretrain", {"base": base, "step": step, "total": total, **stats})

    return on_step


def run_sweep(
    config: SweepConfig,
    out_dir: Path,
    cache_dir: Path,
    *,
    datasets_dir: Path | None = None,
    device: str | None = None,
    on_event: EventFn | None = None,
) -> SweepOutcome:
    """Run every point; write ``summary.csv`` (as it goes) and ``results.json`` in ``out_dir``."""
    emit = on_event or (lambda name, info: None)
    out_dir.mkdir(parents=True, exist_ok=True)
    outcome = SweepOutcome()
    bases: list[dict[str, Any]] = []  # how each base was really pretrained
    for dataset in config.datasets:
        try:
            num_classes = medmnist_num_classes(dataset, datasets_dir)
        except DatasetError as exc:
            outcome.skipped.append(f"{dataset}: {exc}")
            emit("skipped", {"dataset": dataset, "reason": str(exc)})
            continue
        for arch in config.archs:
            emit("base", {"dataset": dataset, "arch": arch})
            pretraining = base_pretraining(config, dataset, arch)
            bases.append(
                {"dataset": dataset, "arch": arch, "pretrain": pretraining.model_dump(mode="json")}
            )
            base = sweep_base(
                config,
                dataset,
                arch,
                num_classes,
                cache_dir,
                datasets_dir=datasets_dir,
                device=device,
                on_step=_pretrain_events(emit, f"{dataset}/{arch}"),
            )
            for hospitals in config.hospitals:
                point = config.point.model_copy(update={"dataset": dataset, "hospitals": hospitals})
                emit("point", {"dataset": dataset, "arch": arch, "hospitals": hospitals})
                result = run_simulation(
                    point, base, datasets_dir=datasets_dir, device=device, on_event=on_event
                )
                row = summary_row(result)
                outcome.rows.append(row)
                outcome.detail.extend(result.rows)
                _append_csv(out_dir / "summary.csv", row)
                emit("row", row)
    payload = {
        "config": config.model_dump(),
        "bases": bases,
        "summary": outcome.rows,
        "models": outcome.detail,
        "skipped": outcome.skipped,
    }
    (out_dir / "results.json").write_text(json.dumps(payload, indent=2, default=str))
    return outcome


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return "" if value is None else str(value)


def markdown_table(rows: list[dict[str, Any]], columns: list[str] | None = None) -> str:
    """Rows as a Markdown table (accuracies to three decimals)."""
    columns = columns or SUMMARY_COLUMNS
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(c)) for c in columns) + " |")
    return "\n".join(lines)
