"""Evaluate a model version on one split of a registered benchmark; store every metric.

One ``Evaluation`` row per (version, benchmark, split), UNIQUE in the database, written
``queued`` when the evaluation is asked for (``app.services.evaluation_runs``). A
delivery takes the row's lease (``eval_lease_s``) and counts itself in ``attempts``; a
repeated task finds the completed (or failed) row and returns it; a row left running
past its lease is sent again by the sweeper.

Each worker process holds one :class:`Evaluator`: benchmark splits decoded once and
kept by the sha256 of their file, and the batch size measured once per architecture
and device (``medvec.evaluation.measure_batch_size``). Every model pass of the worker
goes through it: these evaluations, a merge's validation passes (``worker.calibrate``),
lambda tuning (``worker.tune``) and contributions (``worker.contributions``).
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.db import utcnow
from app.metrics import EVALUATION_SECONDS
from app.models import BaseModelRecord, Benchmark, Evaluation, EvaluationStatus, ModelVersion
from app.services.evaluation_runs import find_evaluation, lease_held
from app.storage import BlobStore
from medvec.data import ImageArrayDataset, load_npz
from medvec.evaluation import evaluate_model, measure_batch_size
from medvec.metrics import Metrics
from medvec.models import ModelSpec, load_model_file
from medvec.training import resolve_device
from worker.config import WorkerSettings
from worker.errors import JobGone, TerminalJobError
from worker.session import session_scope
from worker.splits import SplitRef

log = logging.getLogger(__name__)


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


class Evaluator:
    """A worker process's evaluation state: decoded benchmark splits (most recently used
    first out of ``eval_cached_splits``) and measured batch sizes by (spec, device)."""

    def __init__(self, settings: WorkerSettings) -> None:
        self.device = resolve_device(settings.eval_device)
        self.max_batch_size = settings.eval_max_batch_size
        self.capacity = settings.eval_cached_splits
        self._splits: OrderedDict[tuple[str, str, int, int], ImageArrayDataset] = OrderedDict()
        self._batch_sizes: dict[str, int] = {}
        self.decoded = 0  # splits decoded by this process (the cache's misses)

    def split(
        self, store: BlobStore, benchmark: Benchmark | SplitRef, split: str, spec: ModelSpec
    ) -> ImageArrayDataset:
        """``load_benchmark_split``, decoded once per file, split and input shape."""
        key = (benchmark.sha256, split, spec.in_channels, spec.image_size)
        if key in self._splits:
            self._splits.move_to_end(key)
            return self._splits[key]
        dataset = load_benchmark_split(store, benchmark, split, spec)
        self.decoded += 1
        if self.capacity:
            self._splits[key] = dataset
            while len(self._splits) > self.capacity:
                self._splits.popitem(last=False)
        return dataset

    def batch_size(self, model: torch.nn.Module, spec: ModelSpec) -> int:
        key = spec.model_dump_json()
        if key not in self._batch_sizes:
            shape = (spec.in_channels, spec.image_size, spec.image_size)
            self._batch_sizes[key] = measure_batch_size(
                model, shape, device=self.device, limit=self.max_batch_size
            )
            log.info(
                "evaluation batch size for %s on %s: %d", key, self.device, self._batch_sizes[key]
            )
        return self._batch_sizes[key]

    def evaluate(
        self,
        model: torch.nn.Module,
        dataset: ImageArrayDataset,
        spec: ModelSpec,
        *,
        intervals: bool = False,
    ) -> Metrics:
        batch_size = self.batch_size(model, spec)
        return evaluate_model(
            model, dataset, device=self.device, batch_size=batch_size, intervals=intervals
        )


@dataclass(frozen=True)
class Claimed:
    """An evaluation this delivery holds the lease of: what to run it on."""

    model_path: Path
    benchmark: SplitRef


def claim_evaluation(
    session: Session,
    store: BlobStore,
    version_id: str,
    benchmark_id: str,
    split: str,
    settings: WorkerSettings,
) -> Claimed | Evaluation:
    """Take the lease of the evaluation, or return its row when there is nothing to run.

    Completed and failed rows are final (an admin or a merge queues them again), and a
    row running under a live lease belongs to another delivery (if its worker dies, the
    sweeper sends the row again once the lease expires). Each delivery counts in
    ``attempts``; past ``max_attempts`` the row ends ``failed``, since every delivery
    before died without a word (killed worker, out of memory).
    """
    version = session.get(ModelVersion, version_id)
    benchmark = session.get(Benchmark, benchmark_id)
    if version is None or benchmark is None:
        raise JobGone(f"version {version_id} or benchmark {benchmark_id} does not exist")
    row = find_evaluation(session, version_id, benchmark_id, split)
    if row is None:  # a task sent before rows were written at queue time
        row = Evaluation(version_id=version_id, benchmark_id=benchmark_id, split=split)
        row.metrics, row.attempts = {}, 0
        session.add(row)
    elif row.status in (EvaluationStatus.COMPLETED, EvaluationStatus.FAILED) or lease_held(row):
        return row
    row.attempts += 1
    row.lease_expires_at = None
    if row.attempts > settings.max_attempts:
        row.status = EvaluationStatus.FAILED
        row.error = (
            f"gave up after {settings.max_attempts} deliveries: each attempt died "
            "(the worker was killed or ran out of memory); run it again with "
            "POST /versions/{id}/evaluations"
        )
        return row
    row.status, row.error = EvaluationStatus.RUNNING, None
    row.lease_expires_at = utcnow() + timedelta(seconds=settings.eval_lease_s)
    session.flush()
    return Claimed(store.local_path(version.sha256), SplitRef.of(benchmark, split))


def store_metrics(
    session: Session, version_id: str, benchmark_id: str, split: str, metrics: dict[str, Any]
) -> Evaluation:
    """Upsert the completed evaluation of (version, benchmark, split)."""
    row = find_evaluation(session, version_id, benchmark_id, split)
    if row is None:
        row = Evaluation(version_id=version_id, benchmark_id=benchmark_id, split=split)
        row.attempts = 1
        session.add(row)
    row.metrics = metrics
    row.status = EvaluationStatus.COMPLETED
    row.error, row.lease_expires_at = None, None
    session.flush()
    return row


def mark_evaluation_failed(
    sessions: sessionmaker[Session], version_id: str, benchmark_id: str, split: str, reason: str
) -> None:
    with session_scope(sessions) as session:
        row = find_evaluation(session, version_id, benchmark_id, split)
        if row is not None and row.status is not EvaluationStatus.COMPLETED:
            row.status, row.error = EvaluationStatus.FAILED, reason[:4000]
            row.lease_expires_at = None


def mark_evaluation_queued(
    sessions: sessionmaker[Session], version_id: str, benchmark_id: str, split: str, reason: str
) -> None:
    """Give the lease back before a retry: the retried delivery takes the row again."""
    with session_scope(sessions) as session:
        row = find_evaluation(session, version_id, benchmark_id, split)
        if row is not None and row.status is EvaluationStatus.RUNNING:
            row.status, row.lease_expires_at = EvaluationStatus.QUEUED, None
            row.error = f"retrying after: {reason}"[:4000]


def evaluate_version(
    sessions: sessionmaker[Session],
    store: BlobStore,
    evaluator: Evaluator,
    version_id: str,
    benchmark_id: str,
    settings: WorkerSettings,
    split: str = "test",
) -> dict[str, Any]:
    """Evaluate version ``version_id`` on ``split`` of benchmark ``benchmark_id``; its metrics
    (those already stored when there was nothing to run; none when it failed)."""
    with session_scope(sessions) as session:
        claimed = claim_evaluation(session, store, version_id, benchmark_id, split, settings)
        if not isinstance(claimed, Claimed):
            return dict(claimed.metrics)
    benchmark = claimed.benchmark
    started = time.perf_counter()
    model, spec = load_model_file(claimed.model_path)
    dataset = evaluator.split(store, benchmark, split, spec)
    loaded = time.perf_counter()
    metrics = evaluator.evaluate(model, dataset, spec, intervals=True).model_dump()
    metrics["seconds"] = {"load": loaded - started, "predict": time.perf_counter() - loaded}
    EVALUATION_SECONDS.labels(split=split).observe(time.perf_counter() - started)
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
