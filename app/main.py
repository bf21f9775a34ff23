"""``create_app(settings)``: the registry's FastAPI application.

Nothing is built at import time. The lifespan makes the engine, sessionmaker, blob
store and job queue from the settings and puts them on ``app.state``; on the embedded
SQLite default it migrates the schema itself, elsewhere it refuses to start on an
out-of-date schema and says which command to run.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import timedelta

from fastapi import FastAPI
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from app import schema
from app.api.router import build_api_router, health_router
from app.api.routes.metrics import router as metrics_router
from app.config import Settings
from app.console.deps import make_signer
from app.console.install import install_console
from app.db import make_engine, make_sessionmaker
from app.errors import document_common_errors, install_error_handlers
from app.jobs import JobQueue, default_job_queue
from app.services.hospitals import ensure_bootstrap_admin
from app.services.uploads import expire_uploads
from app.storage import BlobStore
from app.stores import make_store
from app.sweeping import sweep_once, sweeping_uploads

log = logging.getLogger(__name__)

SWEEP_EVERY = timedelta(minutes=10)


def prepare_database(engine: Engine, settings: Settings) -> None:
    if settings.migrate_on_start:
        schema.upgrade(engine)
    else:
        schema.check_up_to_date(engine)


def bootstrap(makesession: sessionmaker[Session], settings: Settings) -> None:
    if settings.bootstrap_admin_token is None:
        return
    with makesession.begin() as session:
        if ensure_bootstrap_admin(session, settings.bootstrap_admin_token.get_secret_value()):
            log.info("bootstrap admin token installed from MEDVEC_BOOTSTRAP_ADMIN_TOKEN")


def sweep_uploads(makesession: sessionmaker[Session], store: BlobStore) -> int:
    return sweep_once(makesession, store, expire_uploads)


def create_app(settings: Settings, *, job_queue: JobQueue | None = None) -> FastAPI:
    """The registry for ``settings``; ``job_queue`` receives jobs after each commit."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        engine = make_engine(settings.resolved_database_url)
        await run_in_threadpool(prepare_database, engine, settings)
        makesession = make_sessionmaker(engine)
        store = make_store(settings)
        await run_in_threadpool(bootstrap, makesession, settings)
        app.state.settings = settings
        app.state.engine = engine
        app.state.sessionmaker = makesession
        app.state.store = store
        app.state.console_signer = make_signer(settings)
        app.state.job_queue = job_queue or default_job_queue(settings)
        every = SWEEP_EVERY.total_seconds()
        try:
            async with sweeping_uploads(makesession, store, expire_uploads, every):
                yield
        finally:
            engine.dispose()

    app = FastAPI(
        title="MedVec registry",
        version="1",
        summary="Hospitals push data vectors; admins merge, evaluate and promote models.",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    app.include_router(health_router)
    if settings.metrics_enabled:
        app.include_router(metrics_router)
    app.include_router(build_api_router())
    install_console(app)
    document_common_errors(app)
    return app
