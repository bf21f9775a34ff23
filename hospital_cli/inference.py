"""Evaluate and predict with a model file on a hospital machine (torch imported lazily)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hospital_cli.errors import CliError

DICOM_SUFFIXES = {".dcm", ".dicom"}


def evaluate_file(
    model_path: Path,
    data: Path,
    *,
    split: str = "test",
    batch_size: int = 256,
    device: str | None = None,
    max_samples: int | None = None,
) -> dict[str, Any]:
    """The full metric set of a model file on a labelled dataset, as a JSON-able dict."""
    from torch.utils.data import Subset

    from hospital_cli.local import check_classes
    from medvec.data import load_dataset
    from medvec.evaluation import evaluate_model
    from medvec.models import load_model_file
    from medvec.training import resolve_device

    if not data.exists():
        raise CliError(f"no data at {data}", hint="give a .npz, an image folder or a DICOM folder")
    model, spec = load_model_file(model_path)
    dataset: Any = load_dataset(
        data, split=split, in_channels=spec.in_channels, image_size=spec.image_size
    )
    check_classes(dataset, spec.num_classes, data)
    if max_samples and max_samples < len(dataset):
        dataset = Subset(dataset, range(max_samples))
    metrics = evaluate_model(model, dataset, device=resolve_device(device), batch_size=batch_size)
    return dict(metrics.model_dump(mode="json"))


def _read_image(path: Path, *, grey: bool, size: int) -> Any:
    """One PNG/JPEG or DICOM file as uint8 pixels, read the way the training readers do."""
    import numpy as np
    from PIL import Image

    from medvec.data import read_dicom
    from medvec.data.folder import read_image

    if path.suffix.lower() not in DICOM_SUFFIXES:
        return read_image(path, grey=grey, size=(size, size))
    pixels = read_dicom(path)
    image = Image.fromarray(pixels).convert("L" if grey else "RGB")
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.uint8)


def image_dataset(paths: list[Path], image_size: int, in_channels: int) -> Any:
    """The images as one in-memory dataset, so prediction sees exactly the eval transform."""
    import numpy as np

    from medvec.data import ImageArrayDataset

    grey = in_channels == 1
    pixels = np.stack([_read_image(p, grey=grey, size=image_size) for p in paths])
    return ImageArrayDataset(pixels, np.zeros(len(paths), dtype=np.int64), in_channels)


def predict_files(
    model_path: Path, images: list[Path], *, device: str | None = None, batch_size: int = 256
) -> list[dict[str, Any]]:
    """Class index and softmax confidence for each image."""
    import numpy as np

    from medvec.evaluation import predict
    from medvec.models import load_model_file
    from medvec.training import resolve_device

    model, spec = load_model_file(model_path)
    dataset = image_dataset(images, spec.image_size, spec.in_channels)
    result = predict(model, dataset, device=resolve_device(device), batch_size=batch_size)
    probs = np.asarray(result.probs)
    return [
        {
            "image": str(path),
            "class_index": int(row.argmax()),
            "confidence": float(row.max()),
            "probabilities": [float(p) for p in row],
        }
        for path, row in zip(images, probs, strict=True)
    ]
