"""``medvec-aggregator``: run the share holder, or mint one of its tokens."""

from __future__ import annotations

from typing import Annotated

import typer

from aggregator.auth import create_token
from aggregator.config import AggregatorSettings
from aggregator.models import AggRole
from aggregator.schema import upgrade

app = typer.Typer(help="The MedVec share holder (secure aggregation's second server).")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8100,
    log_level: Annotated[str, typer.Option()] = "info",
) -> None:
    """Serve the share holder's API (settings from MEDVEC_AGG_* variables)."""
    import uvicorn

    from aggregator.main import create_app

    uvicorn.run(create_app(AggregatorSettings()), host=host, port=port, log_level=log_level)


@app.command("create-token")
def create_token_command(
    name: Annotated[str, typer.Argument(help="The hospital's name at the registry, or a label.")],
    role: Annotated[AggRole, typer.Option(help="hospital, registry or admin.")] = AggRole.HOSPITAL,
) -> None:
    """Mint a token in the share holder's database and print it (shown once)."""
    from app.db import make_engine, make_sessionmaker

    settings = AggregatorSettings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.resolved_database_url)
    upgrade(engine)
    with make_sessionmaker(engine).begin() as session:
        _, secret = create_token(session, name, role)
    engine.dispose()
    typer.echo(secret)


def main() -> None:
    app()
