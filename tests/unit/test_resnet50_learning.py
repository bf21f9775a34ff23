"""ResNet-50 trains with the fine-tuning recipe from random weights (as a base is
pretrained): with torchvision's default initialisation it ended at the majority class
in 5 of 6 runs (seeds 0-2, one and two threads), this seed among them (docs/results.md,
"ResNet-50 merges")."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from medvec.data import load_medmnist
from medvec.evaluation import evaluate_model
from medvec.models import get_model
from medvec.training import TrainConfig, fine_tune

pytestmark = pytest.mark.slow


def test_resnet50_learns_pneumonia_at_the_recipe_learning_rate(datasets_dir: Path) -> None:
    train = load_medmnist("pneumoniamnist", "train", datasets_dir)
    test = load_medmnist("pneumoniamnist", "test", datasets_dir)
    picked = torch.randperm(len(train), generator=torch.Generator().manual_seed(1))[:1500]
    torch.manual_seed(1)
    model = get_model("resnet50", num_classes=2, in_channels=1, stem="imagenet")
    config = TrainConfig(epochs=3, lr=0.05, batch_size=32)
    fine_tune(model, torch.utils.data.Subset(train, picked.tolist()), config, device="cpu")
    metrics = evaluate_model(model, test, device=torch.device("cpu"), batch_size=256)
    majority = float(torch.bincount(test.labels.reshape(-1).long()).max()) / len(test)
    assert metrics.accuracy >= majority + 0.1, (metrics.accuracy, majority)
    assert min(metrics.confusion_matrix[0][0], metrics.confusion_matrix[1][1]) > 0
