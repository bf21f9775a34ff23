"""Image folders: one subfolder per class holding PNG or JPEG files (read with Pillow).

``root/<class>/<image>`` or, with splits, ``root/<split>/<class>/<image>``. Class
indices follow the sorted subfolder names. Images are decoded once, converted to
grey when every image is grey (RGB otherwise) and resized to ``image_size`` (by
default the size of the first image), then held in memory as uint8 arrays.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from medvec.data.arrays import ImageArrayDataset
from medvec.errors import DatasetError

__all__ = ["IMAGE_SUFFIXES", "is_image_folder", "load_image_folder", "read_image"]

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg"})
GREY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "F"})


def _class_dirs(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _images_in(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def is_image_folder(root: Path) -> bool:
    """True when ``root`` has a class subfolder holding at least one image."""
    return any(_images_in(d) for d in _class_dirs(root))


def read_image(path: Path, *, grey: bool, size: tuple[int, int] | None) -> np.ndarray:
    """One image file as uint8 ``(H, W)`` (grey) or ``(H, W, 3)``, resized to ``size``."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            picture: Image.Image = image
            if image.mode in ("I", "I;16", "F"):
                array = np.asarray(image, dtype=np.float64)
                span = float(array.max() - array.min()) or 1.0
                picture = Image.fromarray(((array - array.min()) * (255.0 / span)).astype(np.uint8))
            converted = picture.convert("L" if grey else "RGB")
            if size is not None and converted.size != size:
                converted = converted.resize(size, Image.Resampling.BILINEAR)
            return np.asarray(converted, dtype=np.uint8)
    except (OSError, UnidentifiedImageError) as exc:
        raise DatasetError(f"cannot read image {path}: {exc}", path=str(path)) from exc


def _image_mode(path: Path) -> str:
    from PIL import Image

    with Image.open(path) as image:
        return image.mode


def load_image_folder(
    root: str | os.PathLike[str],
    split: str | None = None,
    *,
    in_channels: int | None = None,
    image_size: int | None = None,
) -> ImageArrayDataset:
    """Every image under ``root``'s class subfolders (``root/<split>/`` when it exists)."""
    root = Path(root)
    if split and (root / split).is_dir() and is_image_folder(root / split):
        root = root / split
    classes = [d for d in _class_dirs(root) if _images_in(d)]
    if not classes:
        raise DatasetError(
            f"{root} holds no class subfolders with images",
            hint="lay the data out as ROOT/<class name>/<image>.png (PNG or JPEG)",
            path=str(root),
        )
    files = [(path, label) for label, d in enumerate(classes) for path in _images_in(d)]
    grey = all(_image_mode(path) in GREY_MODES for path, _ in files)
    if image_size is not None:
        size: tuple[int, int] = (image_size, image_size)
    else:
        first = read_image(files[0][0], grey=grey, size=None)
        size = (first.shape[1], first.shape[0])
    images = np.stack([read_image(path, grey=grey, size=size) for path, _ in files])
    labels = np.array([label for _, label in files], dtype=np.int64)
    return ImageArrayDataset(images, labels, in_channels, classes=[d.name for d in classes])
