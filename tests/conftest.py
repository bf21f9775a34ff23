"""Fixtures every test layer shares: where the real MedMNIST files are; an S3 server."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.s3server import S3Server, moto_server

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


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A real S3 API (moto's standalone server) on a loopback port, for the session."""
    with moto_server(tmp_path_factory.mktemp("moto")) as server:
        yield server
