"""Run a model over a labelled dataset: class probabilities (``predict``) and the
full metric set (``evaluate_model``).

In-memory datasets are batched by index on the device (as in training); other
datasets go through a plain ``DataLoader``. Inputs get the model's channel count
(grey repeated to 3, RGB averaged to 1). Inference runs under ``torch.inference_mode``
in channels-last memory layout (what cuDNN's and oneDNN's fastest convolutions take),
with float16 autocast on CUDA; ``measure_batch_size`` picks the batch size that
runs fastest for a model on a device.
"""

from __future__ import annotations

import time
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

__all__ = ["BATCH_CANDIDATES", "Predictions", "evaluate_model", "measure_batch_size", "predict"]

#: batch sizes ``measure_batch_size`` tries
BATCH_CANDIDATES = (32, 64, 128, 256, 512, 1024)


@dataclass(frozen=True)
class Predictions:
    """True labels ``(N,)`` and softmax probabilities ``(N, K)`` as numpy arrays."""

    y_true: np.ndarray
    probs: np.ndarray

    @property
    def y_pred(self) -> np.ndarray:
        pred: np.ndarray = self.probs.argmax(axis=1)
        return pred

    def metrics(self, *, intervals: bool = False) -> Metrics:
        return compute_metrics(self.y_true, self.probs, intervals=intervals)


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


def _prepare(model: nn.Module, device: torch.device, channels_last: bool) -> nn.Module:
    model = model.to(device).eval()
    return model.to(memory_format=torch.channels_last) if channels_last else model


def _forward(model: nn.Module, images: Tensor, device: torch.device, channels_last: bool) -> Tensor:
    """Logits (float32) of one batch, in inference mode; float16 autocast on CUDA."""
    if channels_last and images.dim() == 4:
        images = images.contiguous(memory_format=torch.channels_last)
    with torch.autocast(device.type, dtype=torch.float16, enabled=device.type == "cuda"):
        logits: Tensor = model(images)
        return logits.float()


def predict(
    model: nn.Module,
    dataset: Any,
    *,
    device: str | torch.device | None = None,
    batch_size: int = 256,
    channels_last: bool = True,
) -> Predictions:
    """Softmax probabilities of ``model`` for every item of ``dataset``, in order."""
    target = resolve_device(device)
    model = _prepare(model, target, channels_last)
    channels = model_in_channels(model)
    probs, labels = [], []
    with torch.inference_mode():
        for images, y in _batches(dataset, batch_size, target, channels):
            logits = _forward(model, images, target, channels_last)
            probs.append(torch.softmax(logits, dim=1).cpu())
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
    channels_last: bool = True,
    intervals: bool = False,
) -> Metrics:
    """The full metric set of ``model`` on ``dataset`` (see ``medvec.metrics``); with
    ``intervals``, their 95% bootstrap intervals."""
    predictions = predict(
        model, dataset, device=device, batch_size=batch_size, channels_last=channels_last
    )
    return predictions.metrics(intervals=intervals)


def measure_batch_size(
    model: nn.Module,
    image_shape: tuple[int, int, int],
    *,
    device: str | torch.device | None = None,
    candidates: tuple[int, ...] = BATCH_CANDIDATES,
    limit: int | None = None,
    min_seconds: float = 0.2,
    min_gain: float = 0.05,
) -> int:
    """The batch size (of ``candidates``, none above ``limit``) at which ``model`` infers the
    most images per second on ``device``, measured on random ``(C, H, W)`` images the way
    ``predict`` runs them. Candidates are tried in increasing order; the search ends at the
    first that gains less than ``min_gain`` over the best so far (on a CPU, throughput
    plateaus early and large batches only cost time to measure) or runs out of memory."""
    target = resolve_device(device)
    model = _prepare(model, target, channels_last=True)
    allowed = [b for b in candidates if limit is None or b <= limit] or [min(candidates)]
    best, best_rate = allowed[0], 0.0
    with torch.inference_mode():
        for size in allowed:
            images = torch.rand((size, *image_shape), device=target)
            try:
                _forward(model, images, target, True)  # warm-up: kernels, allocator
                done, started = 0, time.perf_counter()
                while (elapsed := time.perf_counter() - started) < min_seconds or done == 0:
                    _forward(model, images, target, True).sum().item()  # waits for the device
                    done += size
            except torch.OutOfMemoryError:
                break
            if done / elapsed < best_rate * (1 + min_gain):
                break
            best, best_rate = size, done / elapsed
    return best
