"""Where prometheus-client keeps the values of a machine's processes; no prometheus import.

prometheus-client chooses its multiprocess mode when it is first imported, from
``PROMETHEUS_MULTIPROC_DIR``. The entry points (``medvec-server serve``, the Celery
worker's ``worker.main``) call :func:`configure_multiprocess` first thing, so every
process of a machine writes into the one directory that ``GET /metrics`` reads.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from app.config import Settings

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def configure_multiprocess(settings: Settings) -> Path | None:
    """Export ``PROMETHEUS_MULTIPROC_DIR`` (an operator's own value wins, else
    ``MEDVEC_METRICS_DIR``, else ``data_dir/metrics``) and create it; ``None`` when
    metrics are off."""
    if not settings.metrics_enabled:
        return None
    path = Path(os.environ.get(MULTIPROC_ENV) or settings.resolved_metrics_dir)
    if "prometheus_client" in sys.modules and os.environ.get(MULTIPROC_ENV) != str(path):
        raise RuntimeError("configure_multiprocess must run before prometheus_client is imported")
    path.mkdir(parents=True, exist_ok=True)
    os.environ[MULTIPROC_ENV] = str(path)
    return path
