"""Fetch a missing MedMNIST dataset from the official distribution, verified by MD5.

The official files live in the MedMNIST+ Zenodo record 10519652 (28x28 ``.npz``);
their MD5 checksums are the ones the ``medmnist`` package lists. A file that is
already in the datasets directory is used as it is: only fresh downloads are checked
(some valid copies, re-assembled from public subsets, differ from the official bytes).

Without network access the error names the exact file and folder to put it in.
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path

from medvec.errors import DatasetError

__all__ = [
    "MEDMNIST_MD5",
    "MEDMNIST_RECORD_URL",
    "dataset_url",
    "ensure_medmnist",
    "medmnist_num_classes",
]

MEDMNIST_RECORD_URL = "https://zenodo.org/records/10519652/files"

# 28x28 files of MedMNIST+ (v3), name -> MD5 of the official file.
MEDMNIST_MD5: dict[str, str] = {
    "pathmnist": "a8b06965200029087d5bd730944a56c1",
    "chestmnist": "02c8a6516a18b556561a56cbdd36c4a8",
    "dermamnist": "0744692d530f8e62ec473284d019b0c7",
    "octmnist": "c68d92d5b585d8d81f7112f81e2d0842",
    "pneumoniamnist": "28209eda62fecd6e6a2d98b1501bb15f",
    "retinamnist": "bd4c0672f1bba3e3a89f0e4e876791e4",
    "breastmnist": "750601b1f35ba3300ea97c75c52ff8f6",
    "bloodmnist": "7053d0359d879ad8a5505303e11de1dc",
    "tissuemnist": "ebe78ee8b05294063de985d821c1c34b",
    "organamnist": "68e3f8846a6bd62f0c9bf841c0d9eacc",
    "organsmnist": "9ab87b696fb54e2a387ebe992d6ed5f1",
}

CHUNK = 1 << 20
ProgressFn = Callable[[int, int | None], None]


def dataset_url(name: str, base_url: str = MEDMNIST_RECORD_URL) -> str:
    """Download address of the 28x28 ``name.npz`` (default: the official record)."""
    return f"{base_url}/{name}.npz?download=1"


def _md5_file(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _missing_hint(name: str, folder: Path) -> str:
    return (
        f"put {name}.npz (from {dataset_url(name)}) into {folder}, "
        "or point MEDVEC_DATASETS_DIR / --datasets-dir at the folder that holds it"
    )


def _fetch(url: str, dest: Path, timeout: float, on_bytes: ProgressFn | None) -> None:
    request = urllib.request.Request(url, headers={"User-Agent": "medvec-download"})
    with urllib.request.urlopen(request, timeout=timeout) as response, dest.open("wb") as out:
        length = response.headers.get("Content-Length")
        total = int(length) if length else None
        done = 0
        for chunk in iter(lambda: response.read(CHUNK), b""):
            out.write(chunk)
            done += len(chunk)
            if on_bytes is not None:
                on_bytes(done, total)
        out.flush()
        os.fsync(out.fileno())


def ensure_medmnist(
    name: str,
    folder: Path,
    *,
    download: bool = True,
    timeout: float = 30.0,
    base_url: str = MEDMNIST_RECORD_URL,
    on_bytes: ProgressFn | None = None,
) -> Path:
    """Path of ``folder/name.npz``; download and verify it first when it is missing.

    ``base_url`` serves a mirror with the official file names (checked by the same MD5).
    Raises ``DatasetError`` (one line: which file, where to put it) when the file is
    missing and cannot be downloaded, or when the download's MD5 is not the official one.
    """
    name = name.lower().removesuffix(".npz")
    path = folder / f"{name}.npz"
    if path.is_file():
        return path
    if name not in MEDMNIST_MD5:
        known = ", ".join(sorted(MEDMNIST_MD5))
        raise DatasetError(
            f"dataset {name}.npz is not in {folder} and is not a known MedMNIST set",
            hint=f"known sets: {known}; or put your own {name}.npz (MedMNIST layout) there",
            name=name,
        )
    if not download:
        raise DatasetError(f"dataset {name}.npz is missing", hint=_missing_hint(name, folder))
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{name}.{uuid.uuid4().hex}.part"
    try:
        _fetch(dataset_url(name, base_url), tmp, timeout, on_bytes)
        got = _md5_file(tmp)
        if got != MEDMNIST_MD5[name]:
            raise DatasetError(
                f"download of {name}.npz has MD5 {got}, not the official {MEDMNIST_MD5[name]}",
                hint=_missing_hint(name, folder),
            )
        os.replace(tmp, path)
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        raise DatasetError(
            f"dataset {name}.npz is missing and could not be downloaded ({exc})",
            hint=_missing_hint(name, folder),
            name=name,
        ) from exc
    finally:
        tmp.unlink(missing_ok=True)
    return path


def medmnist_num_classes(name: str, datasets_dir: Path | None = None) -> int:
    """The class count of a MedMNIST set (from its train labels); fetched first if missing."""
    from medvec.data.medmnist import load_medmnist, resolve_datasets_dir

    folder = resolve_datasets_dir(datasets_dir)
    ensure_medmnist(name, folder)
    return int(load_medmnist(name, "train", folder).num_classes)
