"""Progress in a log (stderr not a terminal): a few plain lines, not silence, not a flood."""

from __future__ import annotations

import io

from rich.console import Console

from hospital_cli.output import LogLines


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
