"""``medvec-server``: run the registry, migrate its database, mint the first admin token.

medvec-server                      # serve on 127.0.0.1:8000 (embedded SQLite default)
medvec-server serve --host 0.0.0.0 --port 443 --ssl-keyfile k.pem --ssl-certfile c.pem
medvec-server migrate              # alembic upgrade head on MEDVEC_DATABASE_URL
medvec-server create-admin-token   # prints a new admin token once
medvec-server fsck --verify-hashes # blobs against rows; exit 1 when something is wrong
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer

from app import schema
from app.config import Settings, get_settings
from app.db import make_engine, make_sessionmaker
from app.jobs import JobQueue
from app.metrics_setup import configure_multiprocess
from app.models import Role
from app.security import Actor
from app.services import hospitals, integrity
from medvec.tokens import mint_token

cli = typer.Typer(
    name="medvec-server",
    help="The MedVec registry: REST API for hospitals and admins.",
    no_args_is_help=False,
    add_completion=False,
)

#: module providing ``embedded_worker(settings)`` (a worker in this process) and
#: ``sending_queue(settings)`` (send to Redis), each a ``ContextManager[JobQueue]``
EMBEDDED_WORKER = "worker.embedded"

#: fsck's exit code when it cannot check at all (1 means it found problems)
CANNOT_CHECK = 2


def _job_queue(
    settings: Settings, worker: bool | None
) -> contextlib.AbstractContextManager[JobQueue | None]:
    """Where this API process sends jobs.

    A worker in this process when asked, or by default without Redis; with Redis and no
    in-process worker, a queue that only sends (workers run elsewhere). Without the
    workers installed the registry still serves, and jobs are only logged.
    """
    in_process = worker if worker is not None else settings.redis_url is None
    if worker is False and settings.redis_url is None:
        return contextlib.nullcontext()
    try:
        module = importlib.import_module(EMBEDDED_WORKER)
    except ModuleNotFoundError as exc:
        if worker:
            raise typer.BadParameter(
                f"--worker needs the workers ({exc}); install medvec[worker]"
            ) from exc
        return contextlib.nullcontext()
    factory = module.embedded_worker if in_process else module.sending_queue
    manager: contextlib.AbstractContextManager[JobQueue | None] = factory(settings)
    return manager


@cli.callback(invoke_without_command=True)
def root(ctx: typer.Context) -> None:
    """Without a command: ``serve`` with its defaults."""
    if ctx.invoked_subcommand is None:
        serve()


@cli.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    ssl_keyfile: Annotated[Path | None, typer.Option(help="TLS private key (PEM).")] = None,
    ssl_certfile: Annotated[Path | None, typer.Option(help="TLS certificate (PEM).")] = None,
    worker: Annotated[
        bool | None,
        typer.Option(
            "--worker/--no-worker",
            help="Run a worker in this process (default: yes when MEDVEC_REDIS_URL is unset).",
        ),
    ] = None,
    proxy_headers: Annotated[
        bool, typer.Option(help="Trust X-Forwarded-For from --forwarded-allow-ips.")
    ] = False,
    forwarded_allow_ips: Annotated[str | None, typer.Option()] = None,
    log_level: Annotated[str, typer.Option()] = "info",
) -> None:
    """Serve the registry with uvicorn."""
    import uvicorn

    settings = get_settings()
    configure_multiprocess(settings)  # before app.main imports prometheus-client

    from app.main import create_app

    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "log_level": log_level,
        "proxy_headers": proxy_headers,
        "forwarded_allow_ips": forwarded_allow_ips,
        "ssl_keyfile": str(ssl_keyfile) if ssl_keyfile else None,
        "ssl_certfile": str(ssl_certfile) if ssl_certfile else None,
    }
    _log_to_stderr(log_level)
    _prepare_database(settings)  # before the embedded worker's start-up sweep reads jobs
    with _job_queue(settings, worker) as queue:
        uvicorn.run(create_app(settings, job_queue=queue), **options)


def _log_to_stderr(level: str) -> None:
    """The registry's and the embedded worker's own log records (auto-merge decisions,
    retries, promotions) beside uvicorn's, at ``level`` (uvicorn's ``trace`` is debug)."""
    name = "DEBUG" if level.lower() == "trace" else level.upper()
    logging.basicConfig(level=name, format="%(levelname)s:     %(name)s: %(message)s")


def _prepare_database(settings: Settings) -> None:
    """Create the data dir and migrate (embedded) or check the schema, as the app would."""
    from app.main import prepare_database

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.resolved_database_url)
    try:
        prepare_database(engine, settings)
    finally:
        engine.dispose()


@cli.command()
def migrate(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
) -> None:
    """Upgrade the database schema (``MEDVEC_DATABASE_URL``) to ``revision``."""
    settings = get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.resolved_database_url)
    try:
        schema.upgrade(engine, revision)
        typer.echo(f"database at revision {schema.current_revision(engine)}")
    finally:
        engine.dispose()


@cli.command("create-admin-token")
def create_admin_token(
    name: Annotated[str, typer.Option(help="A name to recognise the token by.")] = "admin",
    print_only: Annotated[
        bool,
        typer.Option(help="Only mint and print (for MEDVEC_BOOTSTRAP_ADMIN_TOKEN); store nothing."),
    ] = False,
) -> None:
    """Mint an admin token and print it once (the registry stores only its sha256)."""
    if print_only:
        typer.echo(mint_token())
        return
    settings = get_settings()
    with _session(settings) as session:
        token, secret = hospitals.create_token(
            session, Actor.system("medvec-server"), name=name, role=Role.ADMIN, hospital_id=None
        )
    typer.echo(secret)
    typer.echo(f"admin token {token.id} ({name}); it is shown only now", err=True)


@cli.command()
def fsck(
    verify_hashes: Annotated[
        bool, typer.Option(help="Re-read every blob and check its sha256 (reads every byte).")
    ] = False,
    grace: Annotated[
        float,
        typer.Option(
            min=0,
            help="Seconds a newly stored blob may wait for its row before it is an orphan.",
        ),
    ] = integrity.DEFAULT_GRACE_S,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Check the blob store against the database; exit 1 when something is wrong.

    Read-only, so it can run beside a live registry.
    """
    from app.main import make_store

    settings = get_settings()
    if settings.is_embedded_db and not settings.embedded_database_path.is_file():
        typer.echo(f"fsck: no registry in {settings.data_dir} (MEDVEC_DATA_DIR)", err=True)
        raise typer.Exit(CANNOT_CHECK)
    engine = make_engine(settings.resolved_database_url)
    try:
        try:
            schema.check_up_to_date(engine)
        except schema.SchemaOutOfDate as exc:
            typer.echo(f"fsck: {exc}", err=True)
            raise typer.Exit(CANNOT_CHECK) from exc
        with make_sessionmaker(engine)() as session:
            report = integrity.check(
                session, make_store(settings), verify_hashes=verify_hashes, grace_s=grace
            )
            session.rollback()
    finally:
        engine.dispose()
    if as_json:
        typer.echo(json.dumps(report.as_dict(), indent=2))
    else:
        _print_report(report)
    if not report.ok:
        raise typer.Exit(1)


def _print_report(report: integrity.Report) -> None:
    checked = f"{report.rows} rows, {report.blobs} blobs"
    if report.hashed:
        checked += f", {report.hashed} re-hashed"
    for finding in report.problems:
        typer.echo(f"PROBLEM {finding.kind}: {finding.message}")
    for finding in report.notes:
        typer.echo(f"note    {finding.kind}: {finding.message}")
    verdict = "ok" if report.ok else f"{len(report.problems)} problem(s)"
    typer.echo(f"fsck: {checked}: {verdict}")


@contextlib.contextmanager
def _session(settings: Settings) -> Iterator[Any]:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.resolved_database_url)
    try:
        if settings.migrate_on_start:
            schema.upgrade(engine)
        else:
            schema.check_up_to_date(engine)
        with make_sessionmaker(engine).begin() as session:
            yield session
    finally:
        engine.dispose()


def main() -> None:
    cli()
