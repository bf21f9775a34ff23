"""Entry point for the ``celery`` command: ``celery -A worker.main worker`` (and ``beat``).

The one place a Celery app is built at import, from the environment. Prometheus'
multiprocess directory is set first, before anything imports prometheus-client, so the
worker's metrics reach the API's ``/metrics`` on the same machine.
"""

from app.config import get_settings
from app.metrics_setup import configure_multiprocess

configure_multiprocess(get_settings())

from celery.signals import worker_init  # noqa: E402  (after the metrics directory)

from worker.celery_app import make_celery  # noqa: E402
from worker.metrics_server import on_worker_init  # noqa: E402

app = make_celery(get_settings())
worker_init.connect(on_worker_init(app.settings), weak=False)
