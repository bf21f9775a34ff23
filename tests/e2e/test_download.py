"""Dataset download: official MD5 check, atomic placement, one clear line when offline."""

from __future__ import annotations

import functools
import http.server
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from medvec.data.download import MEDMNIST_MD5, dataset_url, ensure_medmnist
from medvec.errors import DatasetError


@pytest.fixture()
def mirror(tmp_path: Path, datasets_dir: Path) -> Iterator[str]:
    """A real HTTP server on loopback serving copies of the real MedMNIST files."""
    served = tmp_path / "served"
    served.mkdir()
    for name in ("bloodmnist", "pneumoniamnist"):
        shutil.copyfile(datasets_dir / f"{name}.npz", served / f"{name}.npz")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_download_with_official_md5_lands_in_place(tmp_path: Path, mirror: str) -> None:
    target = tmp_path / "datasets"
    path = ensure_medmnist("bloodmnist", target, base_url=mirror)
    assert path == target / "bloodmnist.npz"
    assert path.stat().st_size > 30_000_000
    assert sorted(p.name for p in target.iterdir()) == ["bloodmnist.npz"]


def test_download_with_other_bytes_is_refused_and_leaves_nothing(
    tmp_path: Path, mirror: str
) -> None:
    """This pneumoniamnist.npz holds the official images in another order: not the same MD5."""
    target = tmp_path / "datasets"
    with pytest.raises(DatasetError, match="not the official 28209eda"):
        ensure_medmnist("pneumoniamnist", target, base_url=mirror)
    assert list(target.iterdir()) == []


def test_unreachable_network_says_where_to_put_the_file(tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as caught:
        ensure_medmnist("octmnist", tmp_path, base_url="http://127.0.0.1:9", timeout=2)
    line = str(caught.value)
    assert "octmnist.npz" in line and str(tmp_path) in line
    assert dataset_url("octmnist") in line and "\n" not in line
    assert list(tmp_path.iterdir()) == []


def test_existing_file_is_used_without_network(datasets_dir: Path) -> None:
    path = ensure_medmnist("pneumoniamnist", datasets_dir, download=False)
    assert path == datasets_dir / "pneumoniamnist.npz"


def test_unknown_set_and_no_download_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="not a known MedMNIST set"):
        ensure_medmnist("catsmnist", tmp_path)
    with pytest.raises(DatasetError, match="put organsmnist.npz"):
        ensure_medmnist("organsmnist", tmp_path, download=False)
    assert "organsmnist" in MEDMNIST_MD5
