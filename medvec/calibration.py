"""BatchNorm recalibration: recompute running statistics of a merged network.

A merged model's weights are a combination of N fine-tuned networks, but the
running mean and variance of each BatchNorm layer must describe the activations of
*that* network. Averaged per-hospital statistics do not: each describes another
network's activations on another data mix, and the mismatch compounds with depth
(Jordan et al., "REPAIR", ICLR 2023). As in SWA's ``update_bn`` (Izmailov et al.,
2018), the statistics are reset and recomputed as the cumulative average of the
batch statistics of forward passes over calibration images. Labels are not used, so
a benchmark's validation images or any unlabelled set from the same task serve.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import BaseModel
from torch import nn

from medvec.data.arrays import in_memory_arrays
from medvec.data.transforms import eval_transform
from medvec.errors import DatasetError
from medvec.training import model_in_channels, resolve_device

__all__ = ["CALIBRATION_MAX_IMAGES", "CalibrationRecord", "has_batchnorm", "recalibrate_bn"]

CALIBRATION_MAX_IMAGES = 2048
"""Images used at most: BN statistics converge long before that (2 forward passes'
worth of a typical validation split), and the cost stays a small share of a merge."""


class CalibrationRecord(BaseModel):
    """What a recalibration did; stored in a merged version's lineage.

    ``source`` names the image set (a benchmark id, a file name) and ``split`` the
    part of it used; ``images`` counts the images that went through the network.
    """

    layers: int
    images: int
    source: str = ""
    split: str = ""


def has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def _calibration_pixels(dataset: Any, max_images: int | None) -> torch.Tensor:
    """uint8 NCHW pixels of (up to ``max_images`` of) an in-memory dataset or a tensor."""
    if isinstance(dataset, torch.Tensor):
        pixels = dataset
    else:
        pixels, _ = in_memory_arrays(dataset, "BatchNorm recalibration")
    if pixels.shape[0] == 0:
        raise DatasetError("no calibration images", hint="give at least one image")
    if max_images is not None and pixels.shape[0] > max_images:
        # evenly spaced rather than the first ones: splits are often ordered by class
        pick = torch.linspace(0, pixels.shape[0] - 1, max_images).round().long()
        pixels = pixels[pick]
    return pixels


@torch.no_grad()
def recalibrate_bn(
    model: nn.Module,
    images: Any,
    *,
    device: str | torch.device | None = None,
    batch_size: int = 256,
    max_images: int | None = CALIBRATION_MAX_IMAGES,
    source: str = "",
    split: str = "",
) -> CalibrationRecord:
    """Reset every BatchNorm's running statistics and recompute them on ``images``.

    ``images`` is an in-memory dataset (``ImageArrayDataset`` or a ``Subset`` of one)
    or a uint8 ``N, C, H, W`` tensor. Only the running statistics change; weights,
    biases and every other buffer stay as they are. The model is left in eval mode.
    """
    target = resolve_device(device)
    layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not layers:
        model.eval()
        return CalibrationRecord(layers=0, images=0, source=source, split=split)
    pixels = _calibration_pixels(images, max_images)
    channels = model_in_channels(model)
    model.to(target)
    momenta = [m.momentum for m in layers]
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None  # cumulative moving average: the exact mean over batches
    model.train()
    seen = 0
    try:
        for start in range(0, pixels.shape[0], batch_size):
            batch = pixels[start : start + batch_size].to(target, non_blocking=True)
            if batch.shape[0] == 1 and pixels.shape[0] > 1:
                continue  # BatchNorm cannot take a lone image in train mode
            model(eval_transform(batch, channels))
            seen += int(batch.shape[0])
    finally:
        for layer, momentum in zip(layers, momenta, strict=True):
            layer.momentum = momentum
        model.eval()
    return CalibrationRecord(layers=len(layers), images=seen, source=source, split=split)
