"""Sending MedVec tasks through Celery: the ``app.jobs.JobQueue`` the API and workers use."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from celery import Celery


class CeleryJobQueue:
    """Sends each job as a named Celery task with its payload as keyword arguments."""

    def __init__(self, celery: Celery, queue: str) -> None:
        self.celery = celery
        self.queue = queue

    def enqueue(self, task: str, payload: dict[str, Any]) -> None:
        self.celery.send_task(task, kwargs=payload, queue=self.queue)
