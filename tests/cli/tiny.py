"""A tiny CNN registered under its own name, so CLI tests train in seconds on a CPU."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from medvec.models import ModelSpec, list_models, register_model, save_model_file

TINY = "cli_tiny_cnn"


def _tiny_cnn(*, num_classes: int, in_channels: int = 3, image_size: int = 28) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * (image_size // 4) ** 2, num_classes),
    )


def ensure_registered() -> None:
    if TINY not in list_models():
        register_model(TINY)(_tiny_cnn)


def make_base(path: Path, *, num_classes: int = 2, seed: int = 0) -> Path:
    """A freshly initialised tiny base model file (the 'pretrained' starting point)."""
    ensure_registered()
    spec = ModelSpec(arch=TINY, num_classes=num_classes, in_channels=3, image_size=28)
    torch.manual_seed(seed)
    model = _tiny_cnn(num_classes=num_classes)
    return save_model_file(path, model, spec, provenance={"name": "tiny test base"})
