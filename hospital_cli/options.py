"""Shared ``Annotated`` option aliases and the one place a command gets its client."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from hospital_cli import output
from hospital_cli.client import RegistryClient
from hospital_cli.config import Resolved, resolve
from hospital_cli.errors import NotLoggedInError

ProfileOpt = Annotated[
    str | None,
    typer.Option(
        "--profile", "-p", help="Profile to use (default: MEDVEC_PROFILE or the active one)."
    ),
]
ServerOpt = Annotated[
    str | None,
    typer.Option("--server", help="Registry URL; overrides MEDVEC_SERVER and the profile."),
]
TokenOpt = Annotated[
    str | None, typer.Option("--token", help="API token; overrides MEDVEC_TOKEN and the profile.")
]


class Stem(StrEnum):
    """ModelSpec.stem's values, spelled out so that `medvec --help` does not import torch."""

    imagenet = "imagenet"
    small = "small"
    strided = "strided"
    auto = "auto"


JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts instead of a table.")]
DeviceOpt = Annotated[
    str | None, typer.Option("--device", help="cpu, cuda, cuda:1 ... (default: CUDA when present).")
]
BatchOpt = Annotated[int, typer.Option("--batch-size", min=1, help="Batch size.")]
DataOpt = Annotated[
    Path,
    typer.Option(
        "--data",
        help="MedMNIST .npz, an image folder (one subfolder per class) or a DICOM folder "
        "with labels.csv.",
    ),
]
ModelOpt = Annotated[Path, typer.Option("--model", "-m", help="A model file (.safetensors).")]


def resolved(profile: str | None, server: str | None, token: str | None) -> Resolved:
    """Resolve flag > env > profile and say on stderr when the environment wins."""
    result = resolve(profile=profile, server=server, token=token)
    for notice in result.notices:
        output.note(notice)
    return result


def make_client(profile: str | None, server: str | None, token: str | None) -> RegistryClient:
    """A client for the resolved registry; a clear error when the user is not logged in."""
    result = resolved(profile, server, token)
    if not result.server or not result.token:
        missing = "server URL" if not result.server else "token"
        raise NotLoggedInError(
            f"no {missing} for profile '{result.profile}'",
            hint="run `medvec login --server URL --token TOKEN` or set MEDVEC_SERVER/MEDVEC_TOKEN",
        )
    return RegistryClient(result.server, result.token)
