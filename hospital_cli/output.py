"""Everything the CLI shows: consoles, JSON output and progress bars.

Progress bars draw only when stderr is a terminal, so scripts and logs get clean
output: results on stdout, one ``Error:`` line on stderr when something fails. Long
counted work (training, pretraining, merging, simulating) still reports to a log: with
stderr not a terminal it writes a plain line there now and then (``LogLines``), so a
run under ``nohup`` or a batch scheduler is not silent for half an hour.
"""

from __future__ import annotations

import json
import math
import time
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    Task,
    TaskID,
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


class LogLines(Progress):
    """Progress for a log, never drawn: a task prints one plain line on stderr when it
    starts, when its phase (description) changes, when it passes another tenth of its
    total (the tenth tenth is its end) or, with no total, when its ``info`` changes (at
    most once a second), and after ``every_s`` seconds without a line."""

    def __init__(self, *columns: Any, console: Console, every_s: float = 30.0) -> None:
        super().__init__(*columns, console=console, disable=True)
        self._every_s = every_s
        self._said: dict[TaskID, tuple[str, str, int, float]] = {}

    def update(self, task_id: TaskID, **changes: Any) -> None:
        super().update(task_id, **changes)
        self._report(task_id)

    def advance(self, task_id: TaskID, advance: float = 1) -> None:
        super().advance(task_id, advance)
        self._report(task_id)

    def _report(self, task_id: TaskID) -> None:
        task = self._tasks[task_id]
        info = str(task.fields.get("info", ""))
        tenth = int(10 * task.completed / task.total) if task.total else -1
        now = time.monotonic()
        said = self._said.get(task_id)
        if said is None or self._worth_a_line(task, info, tenth, said, now):
            self._said[task_id] = (task.description, info, tenth, now)
            self.console.print(_line(task, info), markup=False, highlight=False, soft_wrap=True)

    def _worth_a_line(
        self, task: Task, info: str, tenth: int, said: tuple[str, str, int, float], now: float
    ) -> bool:
        description, old_info, old_tenth, at = said
        if task.description != description or now - at >= self._every_s:
            return True  # a new phase, or a sign of life
        if task.total:
            return tenth > old_tenth  # another tenth; 10 is done
        return info != old_info and now - at >= 1.0


def _line(task: Task, info: str) -> str:
    """``description: done/total (pct%) info [h:mm:ss]``, the count only with a total."""
    elapsed = int(task.elapsed or 0)
    parts = [f"{task.description}:"]
    if task.total:
        done = task.completed / task.total
        parts.append(f"{int(task.completed)}/{int(task.total)} ({100 * done:.0f}%)")
    if info:
        parts.append(info)
    parts.append(f"[{elapsed // 3600}:{elapsed // 60 % 60:02d}:{elapsed % 60:02d}]")
    return " ".join(parts)


def stats_text(stats: dict[str, Any], digits: int = 4) -> str:
    """``loss 0.4410  acc 0.7969`` from a training callback's statistics: the float ones
    that are known (the trainer reports NaN until its first reading, which is no news)."""
    known = {k: v for k, v in stats.items() if isinstance(v, float) and not math.isnan(v)}
    return "  ".join(f"{k} {v:.{digits}f}" for k, v in known.items())


def progress_steps(*, transient: bool = False) -> Progress:
    """A progress bar for counted steps (tensors merged, batches trained); plain lines
    now and then (``LogLines``) when stderr is not a terminal."""
    stderr = err_console()
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
    )
    if not stderr.is_terminal:
        return LogLines(*columns, console=stderr)
    return Progress(*columns, console=stderr, transient=transient)


def note(message: str) -> None:
    """A one-line notice on stderr (never mixed into ``--json`` stdout)."""
    err_console().print(f"[dim]{message}[/dim]", highlight=False)


def success(message: str) -> None:
    console().print(f"[green]✓[/green] {message}", highlight=False)


def warn(message: str) -> None:
    err_console().print(f"[yellow]![/yellow] {message}", highlight=False)


def table(rows: list[dict[str, Any]], columns: list[str], *, title: str | None = None) -> None:
    """Rows as a table on the console; missing cells are blank. No cell is ever cut short
    (an id or a name with an ellipsis is useless): on a terminal a long value folds onto
    the next line, and piped or captured output is as wide as the table needs."""
    from rich.table import Table

    grid = Table(title=title)
    for column in columns:
        grid.add_column(column, overflow="fold")
    cells = [[_cell(row.get(column)) for column in columns] for row in rows]
    for line in cells:
        grid.add_row(*line)
    out = console()
    if not out.is_terminal:  # each column as wide as its widest value, plus the borders
        widest = [max(len(c), *(len(line[i]) for line in cells)) for i, c in enumerate(columns)]
        out = Console(width=max(out.width, sum(widest) + 3 * len(columns) + 1))
    out.print(grid)


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
