"""``medvec login | logout | whoami``: store, forget and check registry credentials."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from hospital_cli import output
from hospital_cli.client import RegistryClient
from hospital_cli.config import DEFAULT_PROFILE, PROFILE_ENV, Profile, ProfileStore
from hospital_cli.options import JsonOpt, ProfileOpt, ServerOpt, TokenOpt, make_client, resolved

app = typer.Typer()


@app.command()
def login(
    server: Annotated[
        str, typer.Option("--server", help="Registry URL, e.g. https://registry:8000.")
    ],
    token: Annotated[
        str, typer.Option("--token", prompt=True, hide_input=True, help="API token (mv_...).")
    ],
    profile: ProfileOpt = None,
    verify: Annotated[bool, typer.Option(help="Check the token with the registry first.")] = True,
) -> None:
    """Save a server URL and token as a profile and make it the active one.

    Example: medvec login --server http://localhost:8000 --token mv_... --profile st-marys
    """
    name = profile or os.environ.get(PROFILE_ENV) or DEFAULT_PROFILE
    identity = None
    if verify:
        with RegistryClient(server, token) as client:
            identity = client.whoami()
    store = ProfileStore.load()
    store.profiles[name] = Profile(server=server.rstrip("/"), token=token)
    store.active = name
    store.save()
    who = f" as {_describe(identity)}" if identity else ""
    output.success(f"logged in to {server}{who}; profile '{name}' saved in {store.path}")


@app.command()
def logout(profile: ProfileOpt = None) -> None:
    """Forget the token of a profile (the active one by default).

    Example: medvec logout --profile st-marys
    """
    store = ProfileStore.load()
    name = profile or store.active
    entry = store.profiles.get(name)
    if entry is None or entry.token is None:
        output.note(f"profile '{name}' holds no token; nothing to do")
        return
    entry.token = None
    store.save()
    output.success(f"logged out of profile '{name}'")


@app.command()
def whoami(
    profile: ProfileOpt = None,
    server: ServerOpt = None,
    token: TokenOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show who the registry thinks you are (role, hospital, token name).

    Example: medvec whoami --json
    """
    where = resolved(profile, server, token)
    with make_client(profile, server, token) as client:
        identity = client.whoami()
    if as_json:
        output.print_json({**identity, "server": where.server, "profile": where.profile})
        return
    output.key_values(
        {"server": where.server, "profile": where.profile, **identity}, title="whoami"
    )


def _describe(identity: dict[str, object]) -> str:
    role = identity.get("role", "?")
    hospital = identity.get("hospital_name")
    return f"{role} of {hospital}" if hospital else str(role)
