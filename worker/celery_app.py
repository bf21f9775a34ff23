"""The Celery application, built from :class:`~worker.config.WorkerSettings`.

``make_celery(settings)`` is the only way to get one: the API builds its own to
send tasks, each worker process builds its own to run them, tests build one per
test session. Database engines and the blob store are built lazily, per worker
process, after the fork (see :class:`~worker.resources.WorkerResources`).
"""

from __future__ import annotations

from datetime import timedelta

from celery import Celery

from app.config import Settings
from app.tasks import PolicyCheck, SweepRun
from worker.config import WorkerSettings, worker_settings
from worker.queue import task_routes
from worker.resources import WorkerResources

#: broker used when no Redis is configured: an in-process queue for the embedded worker
EMBEDDED_BROKER = "memory://"


class MedVecCelery(Celery):
    """A Celery app that carries the settings it was built from and the worker's resources."""

    def __init__(self, settings: WorkerSettings) -> None:
        super().__init__("medvec", set_as_current=False)
        self.settings = settings
        self.resources = WorkerResources(settings)

    @property
    def embedded(self) -> bool:
        return self.settings.redis_url is None


def celery_config(settings: WorkerSettings) -> dict[str, object]:
    """Celery settings: JSON only, late acks, one task at a time per process, time limits."""
    broker = settings.redis_url or EMBEDDED_BROKER
    # a message whose worker died is re-queued once older than the visibility timeout;
    # scanning on every restore tick (throttle 1) makes that happen within ~10 s of it
    transport = {
        "visibility_timeout": settings.visibility_timeout_s,
        "unacked_restore_throttle": 1,
    }
    return {
        "broker_url": broker,
        "result_backend": settings.redis_url or "cache+memory://",
        "broker_transport_options": transport,
        "result_backend_transport_options": transport,
        "broker_connection_retry_on_startup": True,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_ignore_result": True,
        "task_track_started": False,
        "worker_prefetch_multiplier": 1,
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        "task_soft_time_limit": settings.merge_soft_time_limit_s,
        "task_time_limit": settings.merge_time_limit_s,
        "task_default_queue": settings.queue,
        "task_routes": {task: {"queue": queue} for task, queue in task_routes(settings).items()},
        "result_expires": timedelta(days=1),
        "timezone": "UTC",
        "enable_utc": True,
        "beat_schedule": beat_schedule(settings),
    }


def beat_schedule(settings: WorkerSettings) -> dict[str, dict[str, object]]:
    """Periodic tasks: the auto-merge policy (when enabled) and the sweeper."""
    schedule: dict[str, dict[str, object]] = {
        "sweep": {"task": SweepRun.name, "schedule": settings.sweep_interval_s},
    }
    if settings.auto_merge:
        schedule["auto-merge-policy"] = {
            "task": PolicyCheck.name,
            "schedule": settings.policy_interval_s,
        }
    return schedule


def make_sender(settings: Settings) -> MedVecCelery:
    """A Celery app configured from ``settings`` that sends tasks by name and runs none.

    The registry uses it with workers elsewhere: importing the task code would load the
    workers' dependencies (torch) into a process that never runs a task.
    """
    worker_conf = worker_settings(settings)
    app = MedVecCelery(worker_conf)
    app.conf.update(celery_config(worker_conf))
    return app


def make_celery(settings: Settings) -> MedVecCelery:
    """A Celery app configured from ``settings``, with every MedVec task registered."""
    from worker.tasks import register_tasks

    app = make_sender(settings)
    register_tasks(app)
    return app


def make_merge_celery(settings: Settings) -> MedVecCelery:
    """A Celery app that runs merge jobs only (``medvec.merge.run``): with ``merge_queue``
    set its worker writes merged files and never imports torch."""
    from worker.runner import register_merge_task

    app = make_sender(settings)
    register_merge_task(app)
    return app
