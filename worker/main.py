"""Entry point for the ``celery`` command: ``celery -A worker.main worker`` (and ``beat``).

The one place a Celery app is built at import, from the environment.
"""

from app.config import get_settings
from worker.celery_app import make_celery

app = make_celery(get_settings())
