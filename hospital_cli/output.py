"""Everything the CLI shows: consoles, JSON output and progress bars."""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)


def console() -> Console:
    return Console()


def err_console() -> Console:
    return Console(stderr=True)


def print_json(payload: Any) -> None:
    """Machine-readable output for ``--json``: plain JSON on stdout, nothing else."""
    print(json.dumps(payload, indent=2, sort_keys=True, default=str))


def progress_bytes(*, transient: bool = False) -> Progress:
    """A progress bar for byte transfers (uploads, downloads, hashing)."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=err_console(),
        transient=transient,
    )


def progress_steps(*, transient: bool = False) -> Progress:
    """A progress bar for counted steps (tensors merged, batches trained)."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        console=err_console(),
        transient=transient,
    )
