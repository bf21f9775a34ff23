"""Entry point of a merge-only worker: ``celery -A worker.merge_main worker -Q <merge queue>``.

It registers nothing but ``medvec.merge.run``. With ``MEDVEC_MERGE_QUEUE`` set (on this
worker, the registry and the default workers alike) the registry routes merge jobs to
that queue, and this worker writes each merged file on numpy and hands recalibration,
the version and its evaluations to the default queue: its processes never import torch
(docs/workers.md).
"""

from app.config import get_settings
from app.metrics_setup import configure_multiprocess

configure_multiprocess(get_settings())

from celery.signals import worker_init  # noqa: E402  (after the metrics directory)

from worker.celery_app import make_merge_celery  # noqa: E402
from worker.metrics_server import on_worker_init  # noqa: E402

app = make_merge_celery(get_settings())
worker_init.connect(on_worker_init(app.settings), weak=False)
