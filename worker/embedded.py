"""The embedded worker: a Celery worker in a thread of the API's own process.

With no ``MEDVEC_REDIS_URL`` the broker is kombu's in-memory transport, so the API
and this worker share one process and need no external service; the tasks are the
same Celery tasks, run by a real Celery consumer (solo pool). What the in-memory
queue loses when the process stops, the database still knows: on start the worker
re-sends every unfinished job (``worker.sweeper``), and a small ticker sends the
beat schedule (sweeper, auto-merge policy) that ``celery beat`` sends in production.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from celery._state import _set_task_join_will_block  # type: ignore[attr-defined]  # private: unstubbed
from celery.worker import WorkController

from app.config import Settings
from app.jobs import JobQueue
from worker.celery_app import MedVecCelery, beat_schedule, make_celery, make_sender
from worker.queue import CeleryJobQueue, task_routes
from worker.session import session_scope
from worker.sweeper import sweep

log = logging.getLogger(__name__)


class _Controller(WorkController):
    """A WorkController that says when its consumer is ready."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.ready = threading.Event()
        super().__init__(*args, **kwargs)

    def on_consumer_ready(self, consumer: Any) -> None:
        super().on_consumer_ready(consumer)
        self.ready.set()


class EmbeddedWorker:
    """Start / stop a Celery worker thread (and its ticker) inside this process."""

    def __init__(self, settings: Settings) -> None:
        self.app: MedVecCelery = make_celery(settings)
        conf = self.app.settings
        self.queue = CeleryJobQueue(self.app, conf.queue, task_routes(conf))
        self._controller: _Controller | None = None
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()

    def start(self, timeout: float = 60.0) -> None:
        controller = _Controller(
            app=self.app,
            hostname=f"embedded-{threading.get_ident()}@{socket.gethostname()}",
            pool="solo",
            concurrency=1,
            # the embedded worker serves the merge queue too: it is the only worker
            queues=[self.app.settings.queue, *task_routes(self.app.settings).values()],
            without_heartbeat=True,
            without_mingle=True,
            without_gossip=True,
        )
        self._controller = controller
        self._spawn(controller.start, "medvec-worker")
        if not controller.ready.wait(timeout):
            raise RuntimeError(f"the embedded worker did not start within {timeout:.0f} s")
        resent = self.resend_unfinished()
        if resent:
            log.info("embedded worker: re-sent %d unfinished jobs", len(resent))
        self._spawn(self._tick, "medvec-ticker")

    def resend_unfinished(self) -> list[str]:
        """Send again every queued or running job: the in-memory queue starts empty."""
        with session_scope(self.app.resources.sessions, self.queue) as session:
            return sweep(session, self.app.settings, everything=True)

    def _spawn(self, target: Any, name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _tick(self) -> None:
        entries = list(beat_schedule(self.app.settings).values())
        due = {str(e["task"]): float(str(e["schedule"])) for e in entries}
        elapsed = dict.fromkeys(due, 0.0)
        step = min(1.0, *due.values())
        while not self._stopping.wait(step):
            for task, period in due.items():
                elapsed[task] += step
                if elapsed[task] >= period:
                    elapsed[task] = 0.0
                    self.queue.enqueue(task, {})

    def stop(self, timeout: float = 30.0) -> None:
        self._stopping.set()
        if self._controller is not None:
            self._controller.stop(in_sighandler=False)
        for thread in self._threads:
            thread.join(timeout)
        self._threads.clear()
        self.app.resources.close()
        # a started worker marks the whole process as "inside a worker", where
        # AsyncResult.get() refuses to block; the process is an ordinary one again
        _set_task_join_will_block(False)

    def __enter__(self) -> EmbeddedWorker:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()


@contextmanager
def embedded_worker(settings: Settings) -> Iterator[JobQueue]:
    """Run a worker in this process for the block; yields the queue the API sends to."""
    with EmbeddedWorker(settings) as worker:
        yield worker.queue


@contextmanager
def sending_queue(settings: Settings) -> Iterator[JobQueue]:
    """Only send (workers run elsewhere, on ``MEDVEC_REDIS_URL``); yields the queue."""
    app = make_sender(settings)
    try:
        yield CeleryJobQueue(app, app.settings.queue, task_routes(app.settings))
    finally:
        app.close()
