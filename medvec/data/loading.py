"""``load_dataset``: one entry point for every supported on-disk layout."""

from __future__ import annotations

import os
from pathlib import Path

from medvec.data.arrays import ImageArrayDataset
from medvec.data.dicom import DICOM_SUFFIXES, find_labels_csv, load_dicom_folder
from medvec.data.folder import is_image_folder, load_image_folder
from medvec.data.medmnist import load_npz
from medvec.errors import DatasetError

__all__ = ["load_dataset"]


def _is_dicom_folder(root: Path) -> bool:
    if find_labels_csv(root) is None:
        return False
    return any(p.suffix.lower() in DICOM_SUFFIXES for p in root.rglob("*"))


def load_dataset(
    path: str | os.PathLike[str],
    split: str = "train",
    *,
    in_channels: int | None = None,
    image_size: int | None = None,
) -> ImageArrayDataset:
    """A labelled dataset from a MedMNIST ``.npz``, an image folder or a DICOM folder.

    ``split`` picks ``{split}_images`` in a ``.npz``, ``root/{split}/`` in an image
    folder when it exists, and the rows with that ``split`` in a DICOM labels CSV
    when it has that column.
    """
    path = Path(path)
    if path.is_file() and path.suffix.lower() == ".npz":
        return load_npz(path, split, in_channels=in_channels, image_size=image_size)
    if path.is_dir():
        if _is_dicom_folder(path):
            return load_dicom_folder(path, split, in_channels=in_channels, image_size=image_size)
        if is_image_folder(path) or (path / split).is_dir():
            return load_image_folder(path, split, in_channels=in_channels, image_size=image_size)
    if not path.exists():
        raise DatasetError(f"no dataset at {path}", path=str(path))
    raise DatasetError(
        f"cannot tell what kind of dataset {path} is",
        hint="give a MedMNIST .npz, a folder with one subfolder of PNG/JPEG images per "
        "class, or a folder of DICOM files with a labels.csv (columns file,label)",
        path=str(path),
    )
