"""Run a model over a labelled dataset: class probabilities (``predict``) and the
full metric set (``evaluate_model``).

In-memory datasets are batched by index on the device (as in training); other
datasets go through a plain ``DataLoader``. Inputs get the model's channel count
(grey repeated to 3, RGB averaged to 1).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from medvec.data.arrays import batch_arrays
from medvec.data.transforms import eval_transform, match_channels
from medvec.metrics import Metrics, compute_metrics
from medvec.training import model_in_channels, resolve_device

__all__ = ["Predictions", "evaluate_model", "predict"]


@dataclass(frozen=True)
class Predictions:
    """True labels ``(N,)`` and softmax probabilities ``(N, K)`` as numpy arrays."""

    y_true: np.ndarray
    probs: np.ndarray

    @property
    def y_pred(self) -> np.ndarray:
        return self.probs.argmax(axis=1)

    def metrics(self) -> Metrics:
        return compute_metrics(self.y_true, self.probs)


def _batches(
    dataset: Any, batch_size: int, device: torch.device, channels: int | None
) -> Iterator[tuple[Tensor, Tensor]]:
    arrays = batch_arrays(dataset)
    if arrays is not None:
        base, indices = arrays
        for start in range(0, indices.numel(), batch_size):
            index = indices[start : start + batch_size]
            pixels = base.pixels[index].to(device, non_blocking=True)
            yield eval_transform(pixels, channels), base.labels[index]
        return
    for images, labels in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        images = images.to(device, non_blocking=True)
        yield (match_channels(images, channels) if channels else images), labels.reshape(-1)


def predict(
    model: nn.Module,
    dataset: Any,
    *,
    device: str | torch.device | None = None,
    batch_size: int = 256,
) -> Predictions:
    """Softmax probabilities of ``model`` for every item of ``dataset``, in order."""
    target = resolve_device(device)
    model = model.to(target).eval()
    channels = model_in_channels(model)
    amp = target.type == "cuda"
    probs, labels = [], []
    with torch.inference_mode():
        for images, y in _batches(dataset, batch_size, target, channels):
            with torch.autocast(target.type, dtype=torch.float16, enabled=amp):
                logits = model(images)
            probs.append(torch.softmax(logits.float(), dim=1).cpu())
            labels.append(y.cpu())
    if not probs:
        return Predictions(np.zeros(0, dtype=np.int64), np.zeros((0, 0), dtype=np.float32))
    return Predictions(torch.cat(labels).numpy().astype(np.int64), torch.cat(probs).numpy())


def evaluate_model(
    model: nn.Module,
    dataset: Any,
    *,
    device: str | torch.device | None = None,
    batch_size: int = 256,
) -> Metrics:
    """The full metric set of ``model`` on ``dataset`` (see ``medvec.metrics``)."""
    return predict(model, dataset, device=device, batch_size=batch_size).metrics()
