"""Why does a merge collapse? Three measurements of N local models and their merge.

A merged model whose accuracy sits near the test split's majority-class rate may
predict one class for everything. This module trains N hospitals' models from one
base (IID split, as :mod:`medvec.simulation.run` does), merges them with the
weighted mean, and measures:

(a) the merged model's prediction histogram on the test split against the label
    histogram and the majority-class rate;
(b) its accuracy with the averaged BatchNorm statistics the merge produces and with
    statistics recomputed on the validation images (``recalibrate_bn``);
(c) accuracy along the straight line ``(1 - t) * local_k + t * merged`` from each
    local model to the merge, with and without recalibration at each point. A drop in
    the middle of the path that recalibration removes is a statistics mismatch; one
    that stays is a barrier in the loss landscape (the models are not linearly
    mode-connected, Frankle et al., ICML 2020).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from medvec.simulation.run import SimulationConfig, _merge, _spec
from medvec.simulation.runner import Runner, State, labels_of, partition_indices

__all__ = ["DiagnosisConfig", "diagnose_merge", "interpolate"]

EventFn = Callable[[str, dict[str, Any]], None]


class DiagnosisConfig(BaseModel):
    """The hospitals, their training and the points of each local-to-merge path."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    dataset: str = "pneumoniamnist"
    hospitals: int = Field(default=5, ge=1)
    max_train: int | None = Field(default=1500, ge=1)
    max_val: int | None = Field(default=500, ge=1)
    max_test: int | None = Field(default=None, ge=1)
    epochs: int = Field(default=3, ge=1)
    steps: int | None = Field(default=None, ge=1)
    lr: float = Field(default=0.05, gt=0)
    batch_size: int = Field(default=32, ge=1)
    seed: int = 0
    path_points: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)

    def simulation(self) -> SimulationConfig:
        return SimulationConfig(
            dataset=self.dataset,
            hospitals=self.hospitals,
            max_train=self.max_train,
            max_val=self.max_val,
            max_test=self.max_test,
            generations=1,
            epochs=self.epochs,
            steps=self.steps,
            lr=self.lr,
            batch_size=self.batch_size,
            strategies=("weighted_mean",),
            seed=self.seed,
        )


def interpolate(start: State, end: State, t: float) -> State:
    """``(1 - t) * start + t * end`` over floating tensors (running statistics too);
    integer buffers are taken from ``start``."""
    return {
        key: torch.lerp(value, end[key], t) if value.is_floating_point() else value.clone()
        for key, value in start.items()
    }


def _histogram(values: np.ndarray, classes: int) -> list[int]:
    return [int(c) for c in np.bincount(values, minlength=classes)[:classes]]


def _scored(runner: Runner, state: State, classes: int) -> dict[str, Any]:
    from medvec.evaluation import predict

    predictions = predict(runner.load(state), runner.test, device=runner.device, batch_size=256)
    y_pred = predictions.y_pred
    return {
        "accuracy": float((y_pred == predictions.y_true).mean()),
        "predicted": _histogram(y_pred, classes),
    }


def _path(
    runner: Runner, local: State, merged: State, points: Sequence[float], classes: int
) -> list[dict[str, Any]]:
    path = []
    for t in points:
        state = interpolate(local, merged, t)
        plain = _scored(runner, state, classes)
        recalibrated = _scored(runner, runner.calibrated(state), classes)
        path.append(
            {
                "t": t,
                "accuracy": plain["accuracy"],
                "accuracy_recalibrated": recalibrated["accuracy"],
                "predicted": plain["predicted"],
                "predicted_recalibrated": recalibrated["predicted"],
            }
        )
    return path


def diagnose_merge(
    config: DiagnosisConfig,
    base: Path,
    *,
    datasets_dir: Path | None = None,
    device: str | None = None,
    on_event: EventFn | None = None,
) -> dict[str, Any]:
    """Train ``config.hospitals`` local models from ``base``, merge them, measure (a)-(c).

    Accuracies are on the test split; recalibration uses the validation images.
    """
    from medvec.training import resolve_device
    from medvec.vectors import compute_vector

    emit = on_event or (lambda name, info: None)
    runner = Runner(config.simulation(), base, datasets_dir, resolve_device(device))
    classes = runner.spec.num_classes
    labels = np.asarray(labels_of(runner.test)).astype(np.int64)
    label_histogram = _histogram(labels, classes)
    parts = [p for p in partition_indices(labels_of(runner.train), runner.config) if p]
    locals_: list[State] = []
    for number, part in enumerate(parts):
        emit("local", {"hospital": number, "of": len(parts), "samples": len(part)})
        locals_.append(runner.train_on(runner.base_state, part, 1, config.seed + number))
    vectors = [compute_vector(runner.base_state, state) for state in locals_]
    weights = [float(len(p)) for p in parts]
    spec = _spec(runner.config, "weighted_mean")
    merged = _merge(runner.base_state, vectors, weights, spec)
    emit("merged", {"hospitals": len(parts)})
    report: dict[str, Any] = {
        "config": config.model_dump(),
        "arch": runner.spec.arch,
        "image_size": runner.spec.image_size,
        "stem": runner.spec.stem,
        "test_images": len(labels),
        "label_histogram": label_histogram,
        "majority_rate": max(label_histogram) / len(labels),
        "merged": _scored(runner, merged, classes),
        "merged_recalibrated": _scored(runner, runner.calibrated(merged), classes),
        "base": _scored(runner, runner.base_state, classes),
        "locals": [],
    }
    for number, state in enumerate(locals_):
        emit("path", {"hospital": number, "of": len(parts)})
        report["locals"].append(
            {
                "hospital": number,
                "samples": len(parts[number]),
                **_scored(runner, state, classes),
                "path": _path(runner, state, merged, config.path_points, classes),
            }
        )
    return report
