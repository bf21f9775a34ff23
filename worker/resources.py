"""What a worker process needs to run jobs: engine, sessions, blob store, the evaluation
state — built on first use.

Lazy on purpose: a prefork worker builds its Celery app in the parent process and
forks children; database connections must be opened in the child that uses them.
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from app.db import make_engine, make_sessionmaker
from app.storage import BlobStore
from app.stores import make_store

if TYPE_CHECKING:
    from worker.config import WorkerSettings
    from worker.evaluate import Evaluator


class WorkerResources:
    def __init__(self, settings: WorkerSettings) -> None:
        self.settings = settings

    @cached_property
    def engine(self) -> Engine:
        return make_engine(self.settings.resolved_database_url)

    @cached_property
    def sessions(self) -> sessionmaker[Session]:
        return make_sessionmaker(self.engine)

    @cached_property
    def store(self) -> BlobStore:
        return make_store(self.settings)

    @cached_property
    def evaluator(self) -> Evaluator:
        """Decoded benchmarks and measured batch sizes, kept for this process's life."""
        from worker.evaluate import Evaluator  # torch: only where evaluations run

        return Evaluator(self.settings)

    def close(self) -> None:
        if "engine" in self.__dict__:
            self.engine.dispose()
