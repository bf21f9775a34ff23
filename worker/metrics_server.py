"""A worker machine's own ``/metrics`` (``MEDVEC_METRICS_PORT``), for machines that run
workers but no API process to read their multiprocess directory.

Started once, in the Celery main process, when it initialises (before the pool forks):
prometheus-client's HTTP server adds up the files every process of the machine writes
in ``PROMETHEUS_MULTIPROC_DIR``, the pool's children included.
"""

from __future__ import annotations

import logging
from typing import Any

from worker.config import WorkerSettings

log = logging.getLogger(__name__)


def start_metrics_server(settings: WorkerSettings) -> None:
    """Serve the machine's metrics on ``metrics_host:metrics_port`` (no-op when unset)."""
    if settings.metrics_port is None or not settings.metrics_enabled:
        return
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    start_http_server(settings.metrics_port, addr=settings.metrics_host, registry=registry)
    log.info("metrics on http://%s:%d/metrics", settings.metrics_host, settings.metrics_port)


def on_worker_init(settings: WorkerSettings) -> Any:
    """A ``celery.signals.worker_init`` receiver bound to ``settings``."""

    def receiver(**_kwargs: Any) -> None:
        start_metrics_server(settings)

    return receiver
