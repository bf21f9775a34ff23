"""BatchNorm recalibration of merged models, on real BloodMNIST images.

Three hospitals fine-tune a tiny CNN (two BatchNorm layers) on a label-skewed
Dirichlet split of real BloodMNIST; their vectors are merged; the merged model's
averaged running statistics are then recomputed on the validation images.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import Subset

from medvec.calibration import recalibrate_bn
from medvec.data import ImageArrayDataset, load_medmnist
from medvec.data.splits import split_dirichlet
from medvec.data.transforms import eval_transform
from medvec.evaluation import evaluate_model
from medvec.merging import merge_state_dicts
from medvec.training import TrainConfig, fine_tune
from medvec.vectors import compute_vector, is_running_stat
from tests.cli.tiny import _tiny_cnn

HOSPITALS = 3
ALPHA = 0.1  # strongly label-skewed: each hospital sees a few dominant classes


def _config(steps: int, seed: int = 0) -> TrainConfig:
    return TrainConfig(steps=steps, batch_size=64, lr=0.05, augment=False, amp=False, seed=seed)


@pytest.fixture(scope="module")
def blood(datasets_dir: Path) -> tuple[ImageArrayDataset, ImageArrayDataset]:
    train = load_medmnist("bloodmnist", "train", datasets_dir, in_channels=3)
    return train, load_medmnist("bloodmnist", "val", datasets_dir, in_channels=3)


@pytest.fixture(scope="module")
def merged(blood: Any) -> tuple[dict[str, torch.Tensor], int]:
    """Weighted mean of three hospitals' vectors; the base is pretrained briefly on 1,000
    pooled images, each hospital fine-tunes on its Dirichlet share of 3,000 others."""
    train, _val = blood
    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # the same bits on any machine, and polite on a shared one
    try:
        order = np.random.default_rng(0).permutation(len(train))[:4000]
        torch.manual_seed(0)
        base = _tiny_cnn(num_classes=train.num_classes)
        fine_tune(base, Subset(train, order[:1000].tolist()), _config(100), device="cpu")
        base_state = {k: v.clone() for k, v in base.state_dict().items()}
        pool = order[1000:]
        parts = split_dirichlet(train.labels[pool], HOSPITALS, ALPHA, seed=1)
        vectors, samples = [], []
        for hospital, part in enumerate(parts):
            model = _tiny_cnn(num_classes=train.num_classes)
            model.load_state_dict(base_state)
            data = Subset(train, pool[part].tolist())
            fine_tune(model, data, _config(200, seed=hospital), device="cpu")
            vectors.append(compute_vector(base_state, model.state_dict()))
            samples.append(len(part))
    finally:
        torch.set_num_threads(previous)
    state = merge_state_dicts(base_state, vectors, strategy="weighted_mean", num_samples=samples)
    return state, train.num_classes


def _model(state: dict[str, torch.Tensor], classes: int) -> nn.Sequential:
    model = _tiny_cnn(num_classes=classes)
    model.load_state_dict(state)
    return model.eval()


def _bn_statistics_by_hand(model: nn.Sequential, pixels: torch.Tensor) -> list[torch.Tensor]:
    """Each BatchNorm input's mean and unbiased variance over all images in one pass,
    normalising earlier layers by their batch statistics as training mode does."""
    stats: list[torch.Tensor] = []
    x = eval_transform(pixels, 3)
    with torch.no_grad():
        for layer in model:
            if isinstance(layer, nn.BatchNorm2d):
                mean = x.mean(dim=(0, 2, 3))
                stats += [mean, x.var(dim=(0, 2, 3), unbiased=True)]
                biased = x.var(dim=(0, 2, 3), unbiased=False)
                x = (x - mean[:, None, None]) / torch.sqrt(biased[:, None, None] + layer.eps)
                x = x * layer.weight[:, None, None] + layer.bias[:, None, None]
            else:
                x = layer(x)
    return stats


def test_recalibrated_statistics_equal_a_direct_recomputation(merged: Any, blood: Any) -> None:
    state, classes = merged
    _train, val = blood
    model = _model(state, classes)
    record = recalibrate_bn(model, val, device="cpu", batch_size=len(val), source="val")
    assert (record.layers, record.images) == (2, len(val))

    recalibrated = [v for k, v in model.state_dict().items() if is_running_stat(k)]
    expected = _bn_statistics_by_hand(model, val.pixels)
    assert len(recalibrated) == len(expected) == 4
    for got, want in zip(recalibrated, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    averaged = [v for k, v in state.items() if is_running_stat(k)]
    assert not torch.allclose(averaged[1], recalibrated[1], rtol=1e-2)
    for key, value in model.state_dict().items():  # only the running statistics changed
        if not is_running_stat(key) and not key.endswith("num_batches_tracked"):
            assert torch.equal(value, state[key]), key


def test_recalibration_raises_validation_accuracy_of_a_non_iid_merge(
    merged: Any, blood: Any, datasets_dir: Path
) -> None:
    state, classes = merged
    _train, val = blood
    test = load_medmnist("bloodmnist", "test", datasets_dir, in_channels=3)
    model = _model(state, classes)
    before = [evaluate_model(model, d, device="cpu").accuracy for d in (val, test)]
    recalibrate_bn(model, val, device="cpu")
    after = [evaluate_model(model, d, device="cpu").accuracy for d in (val, test)]
    # measured: val 0.386 -> 0.415 (about 50 of the 1,712 images more right); the
    # test images, never seen by the calibration, move alike (0.390 -> 0.413)
    assert after[0] > before[0] + 0.01, (before, after)
    assert after[1] > before[1] + 0.01, (before, after)


def test_a_lone_last_image_is_skipped_and_not_counted() -> None:
    torch.manual_seed(0)
    model = _tiny_cnn(num_classes=2)
    pixels = torch.randint(0, 256, (3, 3, 28, 28), dtype=torch.uint8)
    record = recalibrate_bn(model, pixels, device="cpu", batch_size=2, source="s", split="val")
    # BatchNorm cannot normalise a batch of one image in training mode: it is left out
    assert (record.layers, record.images, record.source, record.split) == (2, 2, "s", "val")
    by_hand = _bn_statistics_by_hand(model, pixels[:2])
    torch.testing.assert_close(model[1].running_mean, by_hand[0], rtol=1e-4, atol=1e-5)


def _small_bn_net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 8),
    )


def test_only_running_statistics_change(blood: Any) -> None:
    _, val = blood
    model = _small_bn_net()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    recalibrate_bn(model, val, device="cpu", max_images=128)
    for key, value in model.state_dict().items():
        if is_running_stat(key) or key.endswith("num_batches_tracked"):
            continue
        assert torch.equal(value, before[key]), key
    assert not torch.equal(model.state_dict()["1.running_mean"], before["1.running_mean"])
    assert model[1].momentum == 0.1 and not model.training


def test_a_model_without_batchnorm_is_left_alone(blood: Any) -> None:
    _, val = blood
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 28 * 28, 8))
    assert recalibrate_bn(model, val, device="cpu").layers == 0


def test_no_images_is_a_clear_error(blood: Any) -> None:
    from medvec.errors import DatasetError

    _, val = blood
    with pytest.raises(DatasetError, match="no calibration images"):
        recalibrate_bn(_small_bn_net(), Subset(val, []), device="cpu")
