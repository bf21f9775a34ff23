"""After a merge: recompute the merged model's BatchNorm statistics and measure the merge.

The streaming engine averages the hospitals' running statistics; they describe
none of the merged network's activations. Where the job names calibration images
(a benchmark's ``val`` or ``train`` split, resolved at request time), the merged
model is loaded, its statistics are recomputed on them (``medvec.calibration``),
and the final model file is written with the merge's provenance plus a
``calibration`` record. The validation accuracy before and after is kept as part
of the version's mergeability, and the final model's full validation metrics are
returned so that the version's val evaluation need not run that pass again. Splits
and validation passes go through the worker process's ``Evaluator``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from app.storage import BlobStore
from medvec.calibration import CalibrationRecord, has_batchnorm, recalibrate_bn
from medvec.data import ImageArrayDataset
from medvec.models import ModelSpec, load_model_file, read_model_provenance, save_model_file
from worker.evaluate import Evaluator, SplitRef


@dataclass(frozen=True)
class Recalibrated:
    """The final model file and what was measured on the way."""

    path: Path
    calibration: dict[str, Any] | None
    val_accuracy_combined: float | None
    val_accuracy_recalibrated: float | None
    val_metrics: dict[str, Any] | None = None
    """The final model's metrics on the validation split (``None`` without one)."""


def calibration_read(record: CalibrationRecord) -> dict[str, Any]:
    """A calibration record as the version stores it (``CalibrationRead``'s fields)."""
    return {
        "benchmark_id": record.source,
        "split": record.split,
        "images": record.images,
        "layers": record.layers,
    }


def recalibrate_on(
    model: torch.nn.Module, images: ImageArrayDataset, source: SplitRef, batch_size: int
) -> CalibrationRecord:
    """Recompute ``model``'s BatchNorm statistics on ``images`` (on the CPU, as evaluations)."""
    return recalibrate_bn(
        model,
        images,
        device="cpu",
        batch_size=batch_size,
        source=source.benchmark_id,
        split=source.split,
    )


def _val_metrics(
    evaluator: Evaluator, model: torch.nn.Module, val: ImageArrayDataset | None, spec: ModelSpec
) -> dict[str, Any] | None:
    return None if val is None else evaluator.evaluate(model, val, spec).model_dump()


def _accuracy(metrics: dict[str, Any] | None) -> float | None:
    return None if metrics is None else float(metrics["accuracy"])


def recalibrate_merged(
    merged: Path,
    out: Path,
    store: BlobStore,
    evaluator: Evaluator,
    *,
    calibration: SplitRef | None,
    validation: SplitRef | None,
    batch_size: int,
) -> Recalibrated:
    """Measure the merged model file ``merged`` on ``validation`` and, with calibration
    images and BatchNorm layers, write the recalibrated model to ``out``. The validation
    passes run on ``evaluator``; the statistics are recomputed in batches of ``batch_size``.

    The returned ``path`` is ``out`` when recalibrated, else ``merged`` unchanged.
    """
    if calibration is None and validation is None:
        return Recalibrated(merged, None, None, None)
    model, spec = load_model_file(merged)
    val = evaluator.split(store, validation, validation.split, spec) if validation else None
    combined = _val_metrics(evaluator, model, val, spec)
    if calibration is None or not has_batchnorm(model):
        return Recalibrated(merged, None, _accuracy(combined), None, combined)
    images = evaluator.split(store, calibration, calibration.split, spec)
    record = recalibrate_on(model, images, calibration, batch_size)
    provenance = {**read_model_provenance(merged), "calibration": record.model_dump()}
    save_model_file(out, model, spec, provenance)
    recalibrated = _val_metrics(evaluator, model, val, spec)
    return Recalibrated(
        out, calibration_read(record), _accuracy(combined), _accuracy(recalibrated), recalibrated
    )
