"""Which registered images recalibrate a merge's BatchNorm statistics, and which validate it.

Resolved when the merge is requested, like the selection, so that the job records
exactly which images its worker uses and a bad choice is refused before any work.
Calibration never reads a test split: the test split only reports.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import BaseModelRecord, Benchmark
from app.services.errors import InvalidInput, NotFound

#: ``calibration`` choices besides a benchmark id: the validation benchmark's val split, or none
CALIBRATION_AUTO = "auto"
CALIBRATION_NONE = "none"
VALIDATION_SPLIT = "val"
#: splits a named calibration set may give, in order of preference
CALIBRATION_SPLITS = (VALIDATION_SPLIT, "train")


def base_classes(base: BaseModelRecord) -> int | None:
    value = base.spec.get("num_classes")
    return int(value) if value is not None else None


def _fits(benchmark: Benchmark, base: BaseModelRecord) -> bool:
    classes = base_classes(base)
    return classes is None or benchmark.num_classes == classes


def validation_benchmark(
    session: Session, base: BaseModelRecord, preferred_id: str | None
) -> Benchmark | None:
    """The benchmark whose ``val`` split validates merges of ``base``: ``preferred_id`` when it
    has one, else the first (by name) of the base's class count that has one, else ``None``."""
    preferred = session.get(Benchmark, preferred_id) if preferred_id else None
    if preferred is not None and _fits(preferred, base) and VALIDATION_SPLIT in preferred.sizes:
        return preferred
    for benchmark in session.scalars(select(Benchmark).order_by(Benchmark.name)):
        if _fits(benchmark, base) and benchmark.sizes.get(VALIDATION_SPLIT):
            return benchmark
    return None


def calibration_source(
    session: Session, base: BaseModelRecord, choice: str, benchmark_id: str | None
) -> dict[str, Any] | None:
    """``{"benchmark_id", "split"}`` of the calibration images, or ``None`` for no recalibration.

    ``choice`` is ``auto`` (the validation benchmark's ``val`` split, if any), ``none``, or a
    benchmark id (its ``val`` split, else its ``train`` split).
    """
    if choice == CALIBRATION_NONE:
        return None
    if choice == CALIBRATION_AUTO:
        found = validation_benchmark(session, base, benchmark_id)
        return None if found is None else {"benchmark_id": found.id, "split": VALIDATION_SPLIT}
    named = session.get(Benchmark, choice)
    if named is None:
        raise NotFound(
            f"no benchmark {choice} to calibrate on",
            hint="calibration is 'auto', 'none' or a benchmark id (GET /api/v1/benchmarks)",
        )
    if not _fits(named, base):
        raise InvalidInput(
            f"benchmark {named.name} has {named.num_classes} classes, the base's model "
            f"{base_classes(base)}",
            hint="calibrate on images of the base's task",
        )
    split = next((s for s in CALIBRATION_SPLITS if named.sizes.get(s)), None)
    if split is None:
        raise InvalidInput(
            f"benchmark {named.name} has no val or train images to calibrate on",
            hint="register a set with val_images (test images are never used for calibration)",
        )
    return {"benchmark_id": named.id, "split": split}
