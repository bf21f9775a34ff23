"""``create_app(settings)``: the share holder's FastAPI application.

At start-up it brings its own database to the head of its own migrations
(``aggregator/migrations``, version table ``aggregator_alembic_version``).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from aggregator.auth import ensure_bootstrap_admin
from aggregator.config import AggregatorSettings
from aggregator.routes import router
from aggregator.schema import upgrade
from aggregator.shares import expire_uploads
from app.db import make_engine, make_sessionmaker
from app.errors import document_common_errors, install_error_handlers
from app.storage import BlobStore, LocalBlobStore
from app.sweeping import sweep_once, sweeping_uploads

SWEEP_EVERY_S = 600.0


def sweep_uploads(makesession: sessionmaker[Session], store: BlobStore) -> int:
    return sweep_once(makesession, store, expire_uploads)


def create_app(settings: AggregatorSettings) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        engine = make_engine(settings.resolved_database_url)
        await run_in_threadpool(upgrade, engine)
        makesession = make_sessionmaker(engine)
        if settings.bootstrap_admin_token is not None:
            secret = settings.bootstrap_admin_token.get_secret_value()
            with makesession.begin() as session:
                ensure_bootstrap_admin(session, secret)
        app.state.settings = settings
        app.state.sessionmaker = makesession
        app.state.store = LocalBlobStore(settings.data_dir / "blobs")
        app.state.engine = engine
        try:
            async with sweeping_uploads(
                makesession, app.state.store, expire_uploads, SWEEP_EVERY_S
            ):
                yield
        finally:
            engine.dispose()

    app = FastAPI(
        title="MedVec share holder",
        version="1",
        summary="Holds share B of each vector; releases only safe sums of at least K shares.",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    document_common_errors(app)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    def readyz() -> dict[str, str]:
        with app.state.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        return {"status": "ready"}

    app.include_router(router)
    return app
