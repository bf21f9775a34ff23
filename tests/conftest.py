"""Fixtures every test layer shares: where the real MedMNIST files are."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

DATASETS_ENV = "MEDVEC_DATASETS_DIR"


@pytest.fixture(scope="session")
def datasets_dir() -> Path:
    """Directory holding the real MedMNIST ``.npz`` files (``MEDVEC_DATASETS_DIR``)."""
    value = os.environ.get(DATASETS_ENV)
    if not value:
        pytest.fail(f"set {DATASETS_ENV} to the directory holding the MedMNIST .npz files")
    path = Path(value)
    if not (path / "pneumoniamnist.npz").is_file():
        pytest.fail(f"{DATASETS_ENV}={path} does not hold pneumoniamnist.npz")
    return path
