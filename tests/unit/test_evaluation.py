"""predict / evaluate_model against a direct forward pass over the dataset's items."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import Subset

from medvec.data import load_medmnist
from medvec.evaluation import evaluate_model, predict
from medvec.metrics import compute_metrics


def _model(in_channels: int, num_classes: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(in_channels, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
        nn.Linear(16, num_classes),
    )  # fmt: skip


@pytest.mark.parametrize(("name", "classes"), [("pneumoniamnist", 2), ("bloodmnist", 8)])
def test_predict_matches_a_direct_forward_pass(datasets_dir: Path, name: str, classes: int) -> None:
    dataset = load_medmnist(name, "test", datasets_dir, in_channels=3)
    subset = Subset(dataset, list(range(300, 100, -1)))  # reversed order must be kept
    model = _model(3, classes).eval()
    predictions = predict(model, subset, device="cpu", batch_size=64)
    with torch.no_grad():
        images = torch.stack([subset[i][0] for i in range(len(subset))])
        expected = torch.softmax(model(images), dim=1).numpy()
    labels = np.array([int(subset[i][1]) for i in range(len(subset))])
    assert np.array_equal(predictions.y_true, labels)
    assert np.allclose(predictions.probs, expected, atol=1e-6)
    assert np.allclose(predictions.probs.sum(1), 1.0, atol=1e-5)
    metrics = evaluate_model(model, subset, device="cpu", batch_size=64)
    assert metrics == compute_metrics(labels, expected)
    assert metrics.n == 200 and metrics.num_classes == classes


def test_grey_dataset_into_three_channel_model(datasets_dir: Path) -> None:
    dataset = load_medmnist("pneumoniamnist", "test", datasets_dir)
    assert dataset.in_channels == 1
    model = _model(3, 2).eval()
    predictions = predict(model, Subset(dataset, range(10)), device="cpu", batch_size=4)
    with torch.no_grad():
        grey = torch.stack([dataset[i][0] for i in range(10)])
        expected = torch.softmax(model(grey.expand(-1, 3, -1, -1)), dim=1).numpy()
    assert np.allclose(predictions.probs, expected, atol=1e-6)
    assert list(predictions.y_pred) == list(expected.argmax(1))
