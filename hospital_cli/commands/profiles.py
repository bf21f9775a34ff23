"""``medvec profiles list | use``: switch between registries and identities."""

from __future__ import annotations

from typing import Annotated

import typer

from hospital_cli import output
from hospital_cli.config import ProfileStore
from hospital_cli.errors import CliError
from hospital_cli.options import JsonOpt

app = typer.Typer(help="List profiles and choose the active one.", no_args_is_help=True)


@app.command("list")
def list_profiles(as_json: JsonOpt = False) -> None:
    """List saved profiles; the active one is marked.

    Example: medvec profiles list --json
    """
    store = ProfileStore.load()
    rows = [
        {
            "active": "*" if name == store.active else "",
            "name": name,
            "server": entry.server,
            "token": _mask(entry.token),
        }
        for name, entry in sorted(store.profiles.items())
    ]
    output.listing(rows, ["active", "name", "server", "token"], as_json=as_json, title="profiles")


@app.command()
def use(name: Annotated[str, typer.Argument(help="Profile to make active.")]) -> None:
    """Make a saved profile the active one.

    Example: medvec profiles use st-marys
    """
    store = ProfileStore.load()
    if name not in store.profiles:
        known = ", ".join(sorted(store.profiles)) or "none"
        raise CliError(f"no profile named '{name}' (known: {known})", hint="run `medvec login`")
    store.active = name
    store.save()
    output.success(f"profile '{name}' is now active")


def _mask(token: str | None) -> str:
    if not token:
        return "(none)"
    return f"{token[:5]}…{token[-4:]}" if len(token) > 12 else "…"
