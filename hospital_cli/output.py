"""Everything the CLI shows: consoles, JSON output and progress bars.

Progress bars draw only when stderr is a terminal, so scripts and logs get clean
output: results on stdout, one ``Error:`` line on stderr when something fails.
"""

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
    print(json.dumps(payload, indent=2, sort_keys=True, default=str), flush=True)


def progress_bytes(*, transient: bool = False) -> Progress:
    """A progress bar for byte transfers (uploads, downloads, hashing)."""
    stderr = err_console()
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=stderr,
        transient=transient,
        disable=not stderr.is_terminal,
    )


def progress_steps(*, transient: bool = False) -> Progress:
    """A progress bar for counted steps (tensors merged, batches trained)."""
    stderr = err_console()
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        console=stderr,
        transient=transient,
        disable=not stderr.is_terminal,
    )


def note(message: str) -> None:
    """A one-line notice on stderr (never mixed into ``--json`` stdout)."""
    err_console().print(f"[dim]{message}[/dim]", highlight=False)


def success(message: str) -> None:
    console().print(f"[green]✓[/green] {message}", highlight=False)


def warn(message: str) -> None:
    err_console().print(f"[yellow]![/yellow] {message}", highlight=False)


def table(rows: list[dict[str, Any]], columns: list[str], *, title: str | None = None) -> None:
    """Rows as a table on the console; missing cells are blank."""
    from rich.table import Table

    grid = Table(title=title)
    for column in columns:
        grid.add_column(column)
    for row in rows:
        grid.add_row(*(_cell(row.get(column)) for column in columns))
    console().print(grid)


def listing(
    rows: list[dict[str, Any]], columns: list[str], *, as_json: bool, title: str | None = None
) -> None:
    """The shared rendering of every listing command: JSON when asked, else a table."""
    if as_json:
        print_json(rows)
    elif not rows:
        note(f"no {title or 'entries'}")
    else:
        table(rows, columns, title=title)


def record(payload: dict[str, Any], as_json: bool, message: str) -> None:
    """One created or changed record: the JSON itself when asked, else a success line."""
    if as_json:
        print_json(payload)
    else:
        success(message)


def key_values(pairs: dict[str, Any], *, title: str | None = None) -> None:
    """A two-column table of names and values (metrics, records)."""
    table([{"field": k, "value": v} for k, v in pairs.items()], ["field", "value"], title=title)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, dict | list):
        return json.dumps(value, default=str)
    return str(value)


def error(message: str) -> None:
    """The one error line on stderr."""
    err_console().print(f"Error: {message}", highlight=False, markup=False, soft_wrap=True)
