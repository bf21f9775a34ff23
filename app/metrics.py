"""Prometheus metrics (prometheus-client), gathered across processes.

Events are counted where they happen, in whichever process that is: uploads in the API
processes, merge and evaluation durations, failures and retries in the Celery workers.
With ``PROMETHEUS_MULTIPROC_DIR`` set (``medvec-server serve`` and the worker set it
from ``MEDVEC_METRICS_DIR`` before anything imports prometheus-client), every process
writes its values to files in that directory and ``GET /metrics`` adds them up. What
the database already knows — vectors per state, queued jobs, the production version's
accuracy — is read at scrape time by :class:`RegistryCollector`, so it is right
whichever process changed it and survives restarts.

The metric objects are module constants: that is how prometheus-client registers them
once per process; their values live in the multiprocess files, not here.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from app.metrics_setup import MULTIPROC_ENV
from app.models import (
    DataVector,
    Evaluation,
    EvaluationStatus,
    JobStatus,
    MergeJob,
    ModelVersion,
    VectorStatus,
    VersionStatus,
)

DURATION_BUCKETS = (1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1200, 1800, 3600, float("inf"))

UPLOADS = Counter("medvec_uploads", "Files accepted into the registry", ["kind"])
UPLOAD_BYTES = Counter("medvec_upload_bytes", "Bytes of the files accepted", ["kind"])
UPLOAD_REJECTIONS = Counter("medvec_upload_rejections", "Uploads refused, by error code", ["code"])
MERGE_SECONDS = Histogram(
    "medvec_merge_duration_seconds",
    "Wall time of a merge job's computation",
    ["strategy"],
    buckets=DURATION_BUCKETS,
)
EVALUATION_SECONDS = Histogram(
    "medvec_evaluation_duration_seconds",
    "Wall time of one evaluation of a version on a benchmark split",
    ["split"],
    buckets=DURATION_BUCKETS,
)
JOB_FAILURES = Counter("medvec_job_failures", "Jobs that ended failed", ["task"])
JOB_RETRIES = Counter("medvec_job_retries", "Transient job failures retried", ["task"])


UPLOAD_ROUTES = re.compile(
    r"^/api/v1/(vectors|bases|benchmarks|uploads|uploads/[^/]+|uploads/[^/]+/complete)$"
)
"""The routes that receive a file (or a session of one): their refusals are rejections."""


def record_upload(kind: str, size: int) -> None:
    """A file of ``kind`` (vector, base, benchmark) and ``size`` bytes was accepted."""
    UPLOADS.labels(kind=kind).inc()
    UPLOAD_BYTES.labels(kind=kind).inc(size)


def record_rejection(method: str, path: str, code: str) -> None:
    """Count an error answer when it refuses an upload (a POST or PUT of a file)."""
    if method in ("POST", "PUT") and UPLOAD_ROUTES.match(path):
        UPLOAD_REJECTIONS.labels(code=code).inc()


class RegistryCollector(Collector):
    """Gauges read from the database at scrape time."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def collect(self) -> Iterator[Metric]:
        with self.sessions() as session:
            yield self._vectors(session)
            yield self._queue(session)
            yield self._production(session)

    def _vectors(self, session: Session) -> Metric:
        gauge = GaugeMetricFamily("medvec_vectors", "Data vectors per state", labels=["status"])
        rows = session.execute(select(DataVector.status, func.count()).group_by(DataVector.status))
        counts = {str(status): int(n) for status, n in rows}
        for status in VectorStatus:
            gauge.add_metric([status.value], counts.get(status.value, 0))
        return gauge

    def _queue(self, session: Session) -> Metric:
        gauge = GaugeMetricFamily(
            "medvec_queue_depth", "Jobs waiting for a worker", labels=["kind"]
        )
        merges = session.scalar(select(func.count()).where(MergeJob.status == JobStatus.QUEUED))
        evaluations = session.scalar(
            select(func.count()).where(Evaluation.status == EvaluationStatus.QUEUED)
        )
        gauge.add_metric(["merge"], int(merges or 0))
        gauge.add_metric(["evaluation"], int(evaluations or 0))
        return gauge

    def _production(self, session: Session) -> Metric:
        gauge = GaugeMetricFamily(
            "medvec_production_accuracy",
            "Accuracy of the production version on each benchmark split it was evaluated on",
            labels=["version_id", "benchmark_id", "split"],
        )
        query = (
            select(ModelVersion.id, Evaluation.benchmark_id, Evaluation.split, Evaluation.metrics)
            .join(Evaluation, Evaluation.version_id == ModelVersion.id)
            .where(
                ModelVersion.status == VersionStatus.PRODUCTION,
                Evaluation.status == EvaluationStatus.COMPLETED,
            )
        )
        for version_id, benchmark_id, split, metrics in session.execute(query):
            accuracy = (metrics or {}).get("accuracy")
            if accuracy is not None:
                gauge.add_metric([version_id, benchmark_id, split], float(accuracy))
        return gauge


def exposition(sessions: sessionmaker[Session]) -> tuple[bytes, str]:
    """The text a scrape gets: every process's counters and histograms, and the gauges."""
    registry = CollectorRegistry()
    if os.environ.get(MULTIPROC_ENV):
        MultiProcessCollector(registry)
    else:  # one process: its own metrics
        registry.register(_ProcessMetrics())
    registry.register(RegistryCollector(sessions))
    return generate_latest(registry), CONTENT_TYPE_LATEST


class _ProcessMetrics(Collector):
    """This process's registered metrics (the default registry), for one-process mode."""

    def collect(self) -> Iterator[Metric]:
        yield from REGISTRY.collect()
