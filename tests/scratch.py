"""Folders for session and module fixtures that are removed when the fixture ends.

pytest keeps every ``tmp_path_factory`` folder until the run ends, and all of them when
a test failed. A session registry holds gigabytes of vectors and merged models by then,
so a few failed runs on one machine used to fill its disk; these folders go with the
fixture that made them, whatever the outcome (a failure's server logs are kept: they
live in folders of their own).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def scratch_dir(factory: pytest.TempPathFactory, name: str) -> Iterator[Path]:
    """A new folder ``name`` under the run's temporary root, removed on exit."""
    path = factory.mktemp(name)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
