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
    from medvec.evaluation import evaluate_model
    from medvec.training import resolve_device
    from torch.utils.data import Subset

    from medvec.data import load_dataset
    from medvec.models import load_model_file

    if not data.exists():
        raise CliError(f"no data at {data}", hint="give a .npz, an image folder or a DICOM folder")
    model, _ = load_model_file(model_path)
    dataset: Any = load_dataset(data, split=split)
    if max_samples and max_samples < len(dataset):
        dataset = Subset(dataset, range(max_samples))
    metrics = evaluate_model(model, dataset, device=resolve_device(device), batch_size=batch_size)
    return dict(metrics.model_dump(mode="json"))


def _read_image(path: Path) -> Any:
    """An image file as a float array in [0, 1], shaped (H, W) or (H, W, C)."""
    import numpy as np

    if path.suffix.lower() in DICOM_SUFFIXES:
        import pydicom

        pixels = pydicom.dcmread(path).pixel_array.astype("float32")
        span = float(pixels.max() - pixels.min()) or 1.0
        return (pixels - pixels.min()) / span
    from PIL import Image

    with Image.open(path) as image:
        mode = "L" if image.mode in ("L", "I", "I;16", "1") else "RGB"
        return np.asarray(image.convert(mode), dtype="float32") / 255.0


def load_image_tensor(path: Path, image_size: int, in_channels: int) -> Any:
    """One image as a (1, C, H, W) tensor the way the training data is fed to the model."""
    import torch
    import torch.nn.functional as F  # noqa: N812

    array = _read_image(path)
    tensor = torch.from_numpy(array)
    tensor = tensor.unsqueeze(0) if tensor.ndim == 2 else tensor.permute(2, 0, 1)
    if tensor.shape[0] != in_channels:
        tensor = tensor.mean(0, keepdim=True).expand(in_channels, -1, -1)
    tensor = tensor.unsqueeze(0).contiguous()
    if tensor.shape[-2:] != (image_size, image_size):
        tensor = F.interpolate(tensor, size=(image_size, image_size), mode="bilinear")
    return normalize(tensor)


def normalize(batch: Any) -> Any:
    """The same normalisation as the core's eval transform."""
    try:
        from medvec.data import normalize_batch
    except ImportError:
        return batch
    return normalize_batch(batch)


def predict_files(
    model_path: Path, images: list[Path], *, device: str | None = None
) -> list[dict[str, Any]]:
    """Class index and softmax confidence for each image."""
    import torch
    from medvec.training import resolve_device

    from medvec.models import load_model_file

    target = resolve_device(device)
    model, spec = load_model_file(model_path)
    model = model.to(target).eval()
    rows = []
    with torch.inference_mode():
        for path in images:
            batch = load_image_tensor(path, spec.image_size, spec.in_channels).to(target)
            probs = torch.softmax(model(batch).float(), dim=1)[0]
            confidence, index = probs.max(dim=0)
            rows.append(
                {"image": str(path), "class_index": int(index), "confidence": float(confidence)}
            )
    return rows
