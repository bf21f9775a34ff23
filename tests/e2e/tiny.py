"""A tiny CNN under its own architecture name, so in-process simulations run in seconds."""

from __future__ import annotations

from torch import nn

from medvec.models import list_models, register_model

TINY = "e2e_tiny_cnn"


def _tiny_cnn(*, num_classes: int, in_channels: int = 3, image_size: int = 28) -> nn.Module:
    del image_size
    return nn.Sequential(
        nn.Conv2d(in_channels, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(32, num_classes),
    )


def ensure_registered() -> str:
    if TINY not in list_models():
        register_model(TINY)(_tiny_cnn)
    return TINY
