"""Sending MedVec tasks through Celery: the ``app.jobs.JobQueue`` the API and workers use."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from app.tasks import MergeRun

if TYPE_CHECKING:
    from celery import Celery

    from worker.config import WorkerSettings


def task_routes(settings: WorkerSettings) -> dict[str, str]:
    """Tasks that go to a queue of their own: merges, when ``merge_queue`` is set."""
    return {MergeRun.name: settings.merge_queue} if settings.merge_queue else {}


class CeleryJobQueue:
    """Sends each job as a named Celery task with its payload as keyword arguments, to
    its route's queue or else to ``queue``."""

    def __init__(self, celery: Celery, queue: str, routes: Mapping[str, str] | None = None) -> None:
        self.celery = celery
        self.queue = queue
        self.routes = dict(routes or {})

    def enqueue(self, task: str, payload: dict[str, Any]) -> None:
        self.celery.send_task(task, kwargs=payload, queue=self.routes.get(task, self.queue))
