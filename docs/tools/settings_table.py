"""The settings tables of docs/registry.md, generated from the settings classes.

Every environment variable the registry, its workers and the share holder read is a field
of ``app.config.Settings``, ``worker.config.WorkerSettings`` (the registry's plus its own)
or ``aggregator.config.AggregatorSettings``; its default and description live there once.
This script writes them between the ``<!-- settings:NAME -->`` and
``<!-- /settings:NAME -->`` markers of docs/registry.md, and
``tests/unit/test_settings_table.py`` fails when the file and the code disagree.

    python docs/tools/settings_table.py          # rewrite the tables
    python docs/tools/settings_table.py --check  # exit 1 when docs/registry.md is stale
"""

from __future__ import annotations

import argparse
import enum
import json
import re
import sys
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined
from pydantic_settings import BaseSettings

from aggregator.config import AggregatorSettings
from app.config import Settings
from worker.config import WorkerSettings

DOC = Path(__file__).resolve().parents[1] / "registry.md"
UNITS = ((1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB"))
SIZES = ("_bytes", "_part_size")  # fields counted in bytes


@dataclass(frozen=True)
class Group:
    """One table: the fields ``cls`` adds to ``inherits`` (all of them without one)."""

    name: str
    cls: type[BaseSettings]
    inherits: type[BaseSettings] | None = None


GROUPS = (
    Group("registry", Settings),
    Group("workers", WorkerSettings, Settings),
    Group("share-holder", AggregatorSettings),
)


def _env_name(cls: type[BaseSettings], field: str) -> str:
    return f"{cls.model_config.get('env_prefix', '')}{field}".upper()


def _bytes(value: int) -> str | None:
    for size, unit in UNITS:
        if value >= size and value % size == 0:
            return f"{value // size} {unit}"
    return None


def _default(name: str, info: FieldInfo) -> str:
    """The default as one would write it in the environment (``unset`` for none)."""
    value: Any = info.get_default(call_default_factory=True)
    if value is PydanticUndefined:
        return "required"
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, enum.Enum):
        return f"`{value.value}`"
    if isinstance(value, timedelta):
        return f"`{TypeAdapter(timedelta).dump_python(value, mode='json')}`"
    if isinstance(value, int) and name.endswith(SIZES) and (size := _bytes(value)):
        return size
    if isinstance(value, list | dict | tuple):
        return f"`{json.dumps(value, separators=(',', ':'))}`"
    return f"`{value}`"


def render(group: Group) -> str:
    """The markdown table of ``group``: variable, default, meaning, in field order."""
    inherited = group.inherits.model_fields if group.inherits is not None else {}
    rows = ["| variable | default | meaning |", "| --- | --- | --- |"]
    for name, info in group.cls.model_fields.items():
        if name in inherited:
            continue
        meaning = " ".join((info.description or "").split()).replace("|", "\\|")
        rows.append(f"| `{_env_name(group.cls, name)}` | {_default(name, info)} | {meaning} |")
    return "\n".join(rows)


def _markers(name: str) -> re.Pattern[str]:
    return re.compile(rf"(<!-- settings:{name} -->\n)(?:.*?\n)?(<!-- /settings:{name} -->)", re.S)


def rendered(text: str) -> str:
    """``text`` with every group's table replaced by the one the code gives."""
    for group in GROUPS:
        pattern = _markers(group.name)
        if not pattern.search(text):
            raise SystemExit(f"{DOC}: no <!-- settings:{group.name} --> block")
        table = render(group)

        def replace(match: re.Match[str], table: str = table) -> str:
            return f"{match.group(1)}{table}\n{match.group(2)}"

        text = pattern.sub(replace, text)
    return text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when the file is stale")
    args = parser.parse_args()
    text = DOC.read_text()
    fresh = rendered(text)
    if args.check:
        if fresh != text:
            print(f"{DOC} is stale: run python docs/tools/settings_table.py", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(fresh)
    return 0


if __name__ == "__main__":
    sys.exit(main())
