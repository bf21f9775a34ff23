"""Evaluate a model version on one split of a registered benchmark; store every metric.

One ``Evaluation`` row per (version, benchmark, split), UNIQUE in the database: a
repeated task finds the completed row and returns it, a failed one is re-run.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import torch
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.models import BaseModelRecord, Benchmark, Evaluation, EvaluationStatus, ModelVersion
from app.storage import BlobStore
from medvec.data import ImageArrayDataset, load_npz
from medvec.metrics import Metrics
from medvec.models import ModelSpec, load_model_file
from worker.config import WorkerSettings
from worker.errors import JobGone, TerminalJobError
from worker.session import session_scope

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SplitRef:
    """One split of a benchmark, detached from any database session."""

    benchmark_id: str
    name: str
    sha256: str
    num_classes: int
    split: str

    @classmethod
    def of(cls, benchmark: Benchmark, split: str) -> SplitRef:
        return cls(benchmark.id, benchmark.name, benchmark.sha256, benchmark.num_classes, split)


def load_benchmark_split(
    store: BlobStore, benchmark: Benchmark | SplitRef, split: str, spec: ModelSpec
) -> ImageArrayDataset:
    """The benchmark's ``split`` shaped for ``spec`` (channels and image size)."""
    if benchmark.num_classes != spec.num_classes:
        raise TerminalJobError(
            f"benchmark {benchmark.name} has {benchmark.num_classes} classes but the model "
            f"{spec.num_classes}: evaluate on a benchmark of the model's task"
        )
    path = store.local_path(benchmark.sha256)
    return load_npz(path, split, in_channels=spec.in_channels, image_size=spec.image_size)


def evaluate_model_on(
    model: torch.nn.Module, dataset: ImageArrayDataset, batch_size: int
) -> Metrics:
    from medvec.evaluation import evaluate_model

    return evaluate_model(model, dataset, device=torch.device("cpu"), batch_size=batch_size)


def _evaluation_row(
    session: Session, version_id: str, benchmark_id: str, split: str
) -> Evaluation | None:
    query = select(Evaluation).where(
        Evaluation.version_id == version_id,
        Evaluation.benchmark_id == benchmark_id,
        Evaluation.split == split,
    )
    return session.scalars(query.with_for_update()).first()


def _start(
    session: Session, store: BlobStore, version_id: str, benchmark_id: str, split: str
) -> tuple[Evaluation | None, Any, Benchmark | None]:
    version = session.get(ModelVersion, version_id)
    benchmark = session.get(Benchmark, benchmark_id)
    if version is None or benchmark is None:
        raise JobGone(f"version {version_id} or benchmark {benchmark_id} does not exist")
    row = _evaluation_row(session, version_id, benchmark_id, split)
    if row is not None and row.status is EvaluationStatus.COMPLETED:
        return row, None, None
    if row is None:
        row = Evaluation(
            version_id=version_id,
            benchmark_id=benchmark_id,
            split=split,
            metrics={},
            status=EvaluationStatus.RUNNING,
        )
        session.add(row)
    row.status, row.error = EvaluationStatus.RUNNING, None
    session.flush()
    return None, store.local_path(version.sha256), benchmark


def store_metrics(
    session: Session, version_id: str, benchmark_id: str, split: str, metrics: dict[str, Any]
) -> Evaluation:
    """Upsert the completed evaluation of (version, benchmark, split)."""
    row = _evaluation_row(session, version_id, benchmark_id, split)
    if row is None:
        row = Evaluation(version_id=version_id, benchmark_id=benchmark_id, split=split, metrics={})
        session.add(row)
    row.metrics = metrics
    row.status = EvaluationStatus.COMPLETED
    row.error = None
    session.flush()
    return row


def mark_evaluation_failed(
    sessions: sessionmaker[Session], version_id: str, benchmark_id: str, split: str, reason: str
) -> None:
    with session_scope(sessions) as session:
        row = _evaluation_row(session, version_id, benchmark_id, split)
        if row is not None and row.status is not EvaluationStatus.COMPLETED:
            row.status, row.error = EvaluationStatus.FAILED, reason[:4000]


def evaluate_version(
    sessions: sessionmaker[Session],
    store: BlobStore,
    version_id: str,
    benchmark_id: str,
    settings: WorkerSettings,
    split: str = "test",
) -> dict[str, Any]:
    """Evaluate version ``version_id`` on ``split`` of benchmark ``benchmark_id``; its metrics."""
    with session_scope(sessions) as session:
        done, model_path, benchmark = _start(session, store, version_id, benchmark_id, split)
        if done is not None:
            return dict(done.metrics)
        session.expunge(benchmark)
    started = time.perf_counter()
    model, spec = load_model_file(model_path)
    dataset = load_benchmark_split(store, benchmark, split, spec)
    loaded = time.perf_counter()
    metrics = evaluate_model_on(model, dataset, settings.eval_batch_size).model_dump()
    metrics["seconds"] = {"load": loaded - started, "predict": time.perf_counter() - loaded}
    with session_scope(sessions) as session:
        store_metrics(session, version_id, benchmark_id, split, metrics)
    log.info(
        "version %s on %s/%s: accuracy %.4f (%d images, %.2fs)",
        version_id,
        benchmark.name,
        split,
        metrics["accuracy"],
        metrics["n"],
        time.perf_counter() - started,
    )
    return metrics


def splits_for(benchmark: Benchmark) -> list[str]:
    """The splits a new version is evaluated on: test (what is reported) and, when the
    benchmark has one, val (what a version is chosen by, so that test stays unbiased)."""
    return ["test"] + (["val"] if benchmark.sizes.get("val") else [])


def benchmarks_for(session: Session, version_id: str, benchmark_id: str | None) -> list[str]:
    """The benchmarks a new version is evaluated on: the one asked for, or every one whose
    class count matches the version's base."""
    if benchmark_id is not None:
        return [benchmark_id]
    version = session.get(ModelVersion, version_id)
    if version is None:
        return []
    base = session.get(BaseModelRecord, version.base_id)
    classes = int(base.spec.get("num_classes", 0)) if base is not None else -1
    query = select(Benchmark.id).where(Benchmark.num_classes == classes).order_by(Benchmark.name)
    return list(session.scalars(query))
