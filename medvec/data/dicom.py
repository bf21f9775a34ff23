"""DICOM folders: ``.dcm`` files plus a labels CSV (read with pydicom).

The CSV (``labels.csv`` by default, or the only CSV in the folder) has the columns
``file`` (path relative to the folder) and ``label`` (a class index or a class
name; names are indexed in sorted order), and optionally ``split`` (rows whose
split differs from the requested one are left out). Pixel data are rescaled with
the file's RescaleSlope/Intercept, min-max scaled per image to uint8 (no clinical
windowing), inverted for MONOCHROME1, and resized to ``image_size`` (by default
the first image's size).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np

from medvec.data.arrays import ImageArrayDataset
from medvec.errors import DatasetError

__all__ = ["DICOM_SUFFIXES", "find_labels_csv", "load_dicom_folder", "read_dicom"]

DICOM_SUFFIXES = frozenset({".dcm", ".dicom"})
LABELS_CSV = "labels.csv"


def find_labels_csv(root: Path) -> Path | None:
    """``root/labels.csv``, else the only CSV file in ``root``, else ``None``."""
    if (root / LABELS_CSV).is_file():
        return root / LABELS_CSV
    found = sorted(root.glob("*.csv"))
    return found[0] if len(found) == 1 else None


def read_dicom(path: Path) -> np.ndarray:
    """One DICOM image as uint8 ``(H, W)`` or ``(H, W, 3)``."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(path)
        pixels = ds.pixel_array.astype(np.float64)
    except (OSError, InvalidDicomError, AttributeError, ValueError) as exc:
        raise DatasetError(f"cannot read DICOM image {path}: {exc}", path=str(path)) from exc
    if pixels.ndim == 3 and pixels.shape[-1] != 3:
        raise DatasetError(f"{path} is a multi-frame DICOM; give one image per file")
    pixels = pixels * float(getattr(ds, "RescaleSlope", 1) or 1)
    pixels = pixels + float(getattr(ds, "RescaleIntercept", 0) or 0)
    low, span = float(pixels.min()), float(pixels.max() - pixels.min()) or 1.0
    scaled = (pixels - low) * (255.0 / span)
    if getattr(ds, "PhotometricInterpretation", "") == "MONOCHROME1":
        scaled = 255.0 - scaled
    return np.rint(scaled).astype(np.uint8)


def _resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if (image.shape[1], image.shape[0]) == size:
        return image
    from PIL import Image

    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))


def _read_rows(csv_path: Path, split: str | None) -> list[dict[str, str]]:
    with csv_path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        columns = set(reader.fieldnames or [])
        if not {"file", "label"} <= columns:
            raise DatasetError(
                f"{csv_path.name} has columns {sorted(columns)}; expected file,label",
                hint="one row per image: file (relative path), label (class index or name)",
                path=str(csv_path),
            )
        rows = list(reader)
    if split and "split" in columns:
        rows = [r for r in rows if r["split"] == split]
    return rows


def _label_indices(values: list[str]) -> tuple[np.ndarray, list[str] | None]:
    if all(v.strip().isdigit() for v in values):
        return np.array([int(v) for v in values], dtype=np.int64), None
    names = sorted(set(values))
    lookup = {name: i for i, name in enumerate(names)}
    return np.array([lookup[v] for v in values], dtype=np.int64), names


def load_dicom_folder(
    root: str | os.PathLike[str],
    split: str | None = None,
    *,
    labels_csv: str | os.PathLike[str] | None = None,
    in_channels: int | None = None,
    image_size: int | None = None,
) -> ImageArrayDataset:
    """The images a folder's labels CSV lists, with their labels."""
    root = Path(root)
    csv_path = Path(labels_csv) if labels_csv else find_labels_csv(root)
    if csv_path is None or not csv_path.is_file():
        raise DatasetError(
            f"no labels CSV in {root}",
            hint=f"add {LABELS_CSV} with the columns file,label (one row per DICOM file)",
            path=str(root),
        )
    base = csv_path.parent
    rows = _read_rows(csv_path, split)
    if not rows:
        where = f" for split {split!r}" if split else ""
        raise DatasetError(f"{csv_path} lists no images{where}", path=str(csv_path))
    missing = [r["file"] for r in rows if not (base / r["file"]).is_file()]
    if missing:
        raise DatasetError(
            f"{len(missing)} files in {csv_path.name} do not exist, e.g. {missing[0]}",
            hint="paths in the file column are relative to the folder holding the CSV",
        )
    images = [read_dicom(base / r["file"]) for r in rows]
    size = (image_size, image_size) if image_size else (images[0].shape[1], images[0].shape[0])
    rgb = any(image.ndim == 3 for image in images)
    if rgb:
        images = [np.repeat(i[..., None], 3, axis=-1) if i.ndim == 2 else i for i in images]
    stacked = np.stack([_resize(image, size) for image in images])
    labels, names = _label_indices([r["label"] for r in rows])
    return ImageArrayDataset(stacked, labels, in_channels, classes=names)
