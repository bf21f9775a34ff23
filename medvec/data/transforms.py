"""Batch transforms shared by training, evaluation and prediction.

They work on whole batches (``N, C, H, W``) so that the training loop never does
per-image Python or PIL work: uint8 pixels become floats in ``[0, 1]``, are
normalised with one fixed mean and std (the same for every channel, so grey and
RGB data share one recipe), have their channel count matched to the model and,
for training only and only when asked, are augmented with random flips and crops.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor

__all__ = [
    "MEAN",
    "STD",
    "augment_batch",
    "eval_transform",
    "match_channels",
    "normalize_batch",
    "resize_batch",
    "to_float",
    "train_transform",
]

MEAN = 0.5
STD = 0.5
CROP_PADDING = 2


def to_float(batch: Tensor) -> Tensor:
    """uint8 pixels to float32 in ``[0, 1]``; float input is returned as float32."""
    if batch.dtype == torch.uint8:
        return batch.to(torch.float32).div_(255.0)
    return batch.to(torch.float32)


def normalize_batch(batch: Tensor) -> Tensor:
    """Pixels in ``[0, 1]`` to the model's input range (``(x - 0.5) / 0.5``, so ``[-1, 1]``)."""
    return (batch - MEAN) / STD


def match_channels(batch: Tensor, channels: int) -> Tensor:
    """Grey to ``channels`` by repeating the channel; RGB to grey by averaging."""
    have = batch.shape[1]
    if have == channels:
        return batch
    if have == 1:
        return batch.expand(-1, channels, -1, -1)
    if channels == 1:
        return batch.mean(dim=1, keepdim=True)
    raise ValueError(f"cannot feed {have}-channel images to a {channels}-channel model")


def resize_batch(batch: Tensor, size: int) -> Tensor:
    """Bilinear resize of a float batch to ``size x size`` (no-op when already that size)."""
    if tuple(batch.shape[-2:]) == (size, size):
        return batch
    return F.interpolate(batch, size=(size, size), mode="bilinear", align_corners=False)


def augment_batch(batch: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Random horizontal flips and random crops (reflect-pad by 2, crop back), per image.

    Random numbers are drawn on the batch's device (from ``generator``, which must
    live there), so a step needs no host-to-device copy and no synchronisation.
    """
    n, _, h, w = batch.shape
    device = batch.device
    flip = torch.rand(n, generator=generator, device=device) < 0.5
    shifts = torch.randint(0, 2 * CROP_PADDING + 1, (2, n), generator=generator, device=device)
    batch = torch.where(flip[:, None, None, None], batch.flip(-1), batch)
    padded = F.pad(batch, (CROP_PADDING,) * 4, mode="reflect")
    rows = shifts[0][:, None] + torch.arange(h, device=device)[None, :]
    cols = shifts[1][:, None] + torch.arange(w, device=device)[None, :]
    index = torch.arange(n, device=device)[:, None, None, None]
    channel = torch.arange(batch.shape[1], device=device)[None, :, None, None]
    return padded[index, channel, rows[:, None, :, None], cols[:, None, None, :]]


def eval_transform(pixels: Tensor, channels: int | None = None) -> Tensor:
    """uint8 (or [0, 1] float) batch -> normalised float batch with ``channels`` channels."""
    batch = to_float(pixels)
    if channels is not None:
        batch = match_channels(batch, channels)
    return normalize_batch(batch)


def train_transform(
    pixels: Tensor,
    channels: int | None = None,
    *,
    augment: bool = False,
    generator: torch.Generator | None = None,
) -> Tensor:
    """The eval transform, plus random flips and crops when ``augment`` is set."""
    batch = to_float(pixels)
    if augment:
        batch = augment_batch(batch, generator)
    if channels is not None:
        batch = match_channels(batch, channels)
    return normalize_batch(batch)
