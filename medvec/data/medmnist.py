"""MedMNIST ``.npz`` files: ``{split}_images`` (uint8, grey ``N,H,W`` or RGB ``N,H,W,3``)
and ``{split}_labels`` (``N`` or ``N,1``) for the splits train, val and test.

The files are read from a datasets directory: an explicit path, else the
``MEDVEC_DATASETS_DIR`` environment variable. They come from the official MedMNIST
distribution (https://medmnist.com, Zenodo record 10519652), one ``<name>.npz``
per dataset, e.g. ``pneumoniamnist.npz``.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np

from medvec.data.arrays import ImageArrayDataset
from medvec.errors import DatasetError

__all__ = [
    "DATASETS_ENV",
    "MEDMNIST_SOURCE",
    "SPLITS",
    "load_medmnist",
    "load_npz",
    "medmnist_path",
    "resolve_datasets_dir",
]

DATASETS_ENV = "MEDVEC_DATASETS_DIR"
MEDMNIST_SOURCE = "https://zenodo.org/records/10519652"
SPLITS = ("train", "val", "test")


def resolve_datasets_dir(path: str | os.PathLike[str] | None = None) -> Path:
    """The datasets directory: ``path`` if given, else ``$MEDVEC_DATASETS_DIR``; must exist."""
    value = path if path is not None else os.environ.get(DATASETS_ENV)
    if not value:
        raise DatasetError(
            "no datasets directory given",
            hint=f"set {DATASETS_ENV} to a directory holding MedMNIST files such as "
            f"pneumoniamnist.npz (download them from {MEDMNIST_SOURCE})",
        )
    directory = Path(value).expanduser()
    if not directory.is_dir():
        raise DatasetError(
            f"datasets directory {directory} does not exist",
            hint=f"create it and put the MedMNIST .npz files there ({MEDMNIST_SOURCE})",
            path=str(directory),
        )
    return directory


def medmnist_path(name: str, datasets_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where ``<name>.npz`` lives; a clear error saying where to put it when it is missing."""
    directory = resolve_datasets_dir(datasets_dir)
    stem = name.lower().removesuffix(".npz")
    path = directory / f"{stem}.npz"
    if not path.is_file():
        raise DatasetError(
            f"dataset {stem!r} not found: {path} does not exist",
            hint=f"download {stem}.npz (28x28) from {MEDMNIST_SOURCE} into {directory}",
            path=str(path),
        )
    return path


def load_medmnist(
    name: str,
    split: str,
    datasets_dir: str | os.PathLike[str] | None = None,
    *,
    in_channels: int | None = None,
    image_size: int | None = None,
) -> ImageArrayDataset:
    """One split of a MedMNIST dataset by name, e.g. ``load_medmnist("pneumoniamnist", "test")``."""
    path = medmnist_path(name, datasets_dir)
    return load_npz(path, split, in_channels=in_channels, image_size=image_size)


def load_npz(
    path: str | os.PathLike[str],
    split: str = "train",
    *,
    in_channels: int | None = None,
    image_size: int | None = None,
) -> ImageArrayDataset:
    """One split of a MedMNIST-layout ``.npz`` file."""
    path = Path(path)
    keys = f"{split}_images", f"{split}_labels"
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [k for k in keys if k not in archive.files]
            if missing:
                present = sorted({f.rsplit("_", 1)[0] for f in archive.files})
                raise DatasetError(
                    f"{path.name} has no {split!r} split (missing {', '.join(missing)})",
                    hint=f"splits in this file: {', '.join(present) or 'none'}",
                    path=str(path),
                )
            images, labels = archive[keys[0]], archive[keys[1]]
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise DatasetError(
            f"cannot read {path}: {exc}",
            hint="give a MedMNIST-layout .npz (train_images, train_labels, ...)",
            path=str(path),
        ) from exc
    return ImageArrayDataset(images, labels, in_channels, image_size)
