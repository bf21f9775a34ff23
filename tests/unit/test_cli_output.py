"""Progress in a log (stderr not a terminal): a few plain lines, not silence, not a flood.
Listings piped or captured: whole values, never cut short."""

from __future__ import annotations

import io
import uuid

import pytest
from rich.console import Console

from hospital_cli.output import LogLines, table


def _log() -> tuple[LogLines, io.StringIO]:
    sink = io.StringIO()
    return LogLines(console=Console(file=sink, force_terminal=False, width=60)), sink


def test_a_counted_task_says_each_tenth_once_and_its_end() -> None:
    bar, sink = _log()
    with bar:
        task = bar.add_task("train", total=None, info="")
        for step in range(1, 1001):
            bar.update(task, completed=step, total=1000, info=f"loss {1 / step:.4f}")
    lines = sink.getvalue().splitlines()
    assert len(lines) == 11, lines  # its start, then 10% ... 100%
    assert lines[0].startswith("train: 1/1000 (0%) loss 1.0000 [")
    assert [line.split()[1] for line in lines[1:]] == [f"{100 * k}/1000" for k in range(1, 11)]
    assert lines[-1].startswith("train: 1000/1000 (100%) loss 0.0010")


def test_a_new_phase_is_said_at_once_and_a_repeat_is_not() -> None:
    bar, sink = _log()
    with bar:
        task = bar.add_task("simulate", total=None, info="")
        for name in ("base", "local", "local", "merge"):
            bar.update(task, description=name, info=f"{name}=" + "x" * 80)
    lines = sink.getvalue().splitlines()
    assert [line.split("=")[0] for line in lines] == ["base: base", "local: local", "merge: merge"]
    assert all(len(line) > 80 for line in lines)  # one line each, not wrapped at 60 columns


def test_a_captured_listing_holds_every_value_whole(capsys: pytest.CaptureFixture[str]) -> None:
    """Four columns of ids and long names are wider than the 80 columns a console assumes
    when it is not a terminal; the table used to end each cell with an ellipsis, so a
    script (or an admin piping to grep) could not read an id or a name back."""
    rows = [
        {"id": str(uuid.uuid4()), "name": f"st-marys-hospital-{i}-of-the-north-east",
         "token": str(uuid.uuid4()), "created_at": "2026-12-07T19:37:12.123456+00:00"}
        for i in range(3)
    ]  # fmt: skip
    table(rows, ["id", "name", "token", "created_at"], title="hospitals")
    out = capsys.readouterr().out
    for row in rows:
        assert all(value in out for value in row.values()), out
    assert "\u2026" not in out
