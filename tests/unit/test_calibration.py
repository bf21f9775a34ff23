"""recalibrate_bn on real BloodMNIST: exact statistics, nothing else touched, and a
merged ResNet's accuracy recovered."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import Subset

from medvec.calibration import recalibrate_bn
from medvec.data import ImageArrayDataset, eval_transform, load_medmnist
from medvec.errors import DatasetError
from medvec.evaluation import evaluate_model
from medvec.merging import merge_state_dicts
from medvec.models import ModelSpec, build_model
from medvec.training import TrainConfig, fine_tune
from medvec.vectors import compute_vector


@pytest.fixture(scope="module")
def blood(datasets_dir: Path) -> tuple[ImageArrayDataset, ImageArrayDataset]:
    return (
        load_medmnist("bloodmnist", "train", datasets_dir),
        load_medmnist("bloodmnist", "val", datasets_dir),
    )


def _tiny(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 8),
    )


def test_statistics_are_the_average_of_the_calibration_batches(blood: Any) -> None:
    _, val = blood
    model = _tiny()
    record = recalibrate_bn(model, Subset(val, range(300)), device="cpu", batch_size=64)
    assert (record.layers, record.images) == (1, 300)
    with torch.no_grad():
        features = model[0](eval_transform(val.pixels[:300], 3))
    batches = [features[i : i + 64] for i in range(0, 300, 64)]
    # a cumulative average: every batch counts once, as in SWA's update_bn
    mean = torch.stack([b.mean(dim=(0, 2, 3)) for b in batches]).mean(0)
    var = torch.stack([b.var(dim=(0, 2, 3), unbiased=True) for b in batches]).mean(0)
    bn = model[1]
    assert torch.allclose(bn.running_mean, mean, atol=1e-5)
    assert torch.allclose(bn.running_var, var, rtol=1e-4)
    assert bn.momentum == 0.1 and not model.training


def test_only_running_statistics_change(blood: Any) -> None:
    _, val = blood
    model = _tiny()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    recalibrate_bn(model, val, device="cpu", max_images=128)
    for key, value in model.state_dict().items():
        if key.endswith(("running_mean", "running_var", "num_batches_tracked")):
            continue
        assert torch.equal(value, before[key]), key
    assert not torch.equal(model.state_dict()["1.running_mean"], before["1.running_mean"])


def test_a_model_without_batchnorm_is_left_alone(blood: Any) -> None:
    _, val = blood
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 28 * 28, 8))
    assert recalibrate_bn(model, val, device="cpu").layers == 0


def test_no_images_is_a_clear_error(blood: Any) -> None:
    _, val = blood
    with pytest.raises(DatasetError, match="no calibration images"):
        recalibrate_bn(_tiny(), Subset(val, []), device="cpu")


@pytest.mark.slow
def test_recalibration_repairs_a_merge_of_non_iid_resnets(blood: Any) -> None:
    """Two ResNet-18s fine-tuned on disjoint halves of the classes: their averaged BN
    statistics describe neither network; recomputing them recovers validation accuracy."""
    train, val = blood
    spec = ModelSpec(arch="resnet18", num_classes=8, stem="imagenet")
    torch.manual_seed(0)
    base = build_model(spec)
    base_state = {k: v.clone() for k, v in base.state_dict().items()}
    labels = train.labels
    halves = [
        torch.nonzero(labels < 4).flatten()[:600].tolist(),
        torch.nonzero(labels >= 4).flatten()[:600].tolist(),
    ]
    vectors = []
    for seed, indices in enumerate(halves):
        model = build_model(spec)
        model.load_state_dict(base_state)
        fine_tune(model, Subset(train, indices), TrainConfig(epochs=3, seed=seed), device="cpu")
        vectors.append(compute_vector(base_state, model.state_dict()))
    merged = merge_state_dicts(base_state, vectors, strategy="weighted_mean")
    model = build_model(spec)
    model.load_state_dict(merged)
    held_out = Subset(val, range(800))
    plain = evaluate_model(model, held_out, device="cpu").accuracy
    recalibrate_bn(model, Subset(val, range(800, 1600)), device="cpu")
    calibrated = evaluate_model(model, held_out, device="cpu").accuracy
    assert calibrated > plain + 0.05, (plain, calibrated)
