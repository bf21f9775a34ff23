"""What a worker process needs to run jobs: engine, sessions, blob store — built on first use.

Lazy on purpose: a prefork worker builds its Celery app in the parent process and
forks children; database connections must be opened in the child that uses them.
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from app.db import make_engine, make_sessionmaker
from app.storage import BlobStore, LocalBlobStore

if TYPE_CHECKING:
    from worker.config import WorkerSettings


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
        return LocalBlobStore(self.settings.data_dir / "blobs")

    def close(self) -> None:
        if "engine" in self.__dict__:
            self.engine.dispose()
