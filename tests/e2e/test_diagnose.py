"""The merge-collapse diagnosis on real BloodMNIST, at tiny sizes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from medvec.data import load_medmnist
from medvec.models import ModelSpec
from medvec.pretrain import PretrainConfig, ensure_base
from medvec.simulation.diagnose import DiagnosisConfig, diagnose_merge, interpolate
from tests.e2e.tiny import ensure_registered


def test_interpolate_is_linear_on_floats_and_keeps_integer_buffers() -> None:
    start = {"w": torch.tensor([0.0, 2.0]), "n": torch.tensor(3)}
    end = {"w": torch.tensor([4.0, 6.0]), "n": torch.tensor(9)}
    mid = interpolate(start, end, 0.25)
    assert torch.equal(mid["w"], torch.tensor([1.0, 3.0]))
    assert int(mid["n"]) == 3
    assert torch.equal(interpolate(start, end, 1.0)["w"], end["w"])


@pytest.mark.slow
def test_diagnosis_measures_what_it_says(tmp_path: Path, datasets_dir: Path) -> None:
    arch = ensure_registered()
    spec = ModelSpec(arch=arch, num_classes=8, in_channels=3, image_size=28)
    pretrain = PretrainConfig(max_samples=128, steps=4, batch_size=32, arch=arch)
    base = ensure_base(
        spec, tmp_path, config=pretrain.excluding("bloodmnist"), datasets_dir=datasets_dir
    )
    config = DiagnosisConfig(
        dataset="bloodmnist", hospitals=3, max_train=150, max_val=64, max_test=200, epochs=1,
        lr=0.05, batch_size=16, path_points=(0.0, 0.5, 1.0),
    )  # fmt: skip
    report = diagnose_merge(config, base, datasets_dir=datasets_dir, device="cpu")

    # (a) the label histogram and majority rate of the very test images used
    test = load_medmnist("bloodmnist", "test", datasets_dir)
    order = torch.randperm(len(test), generator=torch.Generator().manual_seed(config.seed + 2))
    labels = np.asarray(test.labels).reshape(-1)[order[:200].numpy()]
    expected = np.bincount(labels, minlength=8).tolist()
    assert report["label_histogram"] == expected and report["test_images"] == 200
    assert report["majority_rate"] == pytest.approx(max(expected) / 200)
    for model in (report["merged"], report["merged_recalibrated"], *report["locals"]):
        assert sum(model["predicted"]) == 200 and len(model["predicted"]) == 8
        # accuracy can be no higher than the overlap of the two histograms allows
        overlap = sum(min(p, t) for p, t in zip(model["predicted"], expected, strict=True))
        assert model["accuracy"] <= overlap / 200 + 1e-9

    # (b) and (c): the path's end points are the local model and the merge
    assert len(report["locals"]) == 3
    for local in report["locals"]:
        start, middle, end = local["path"]
        assert [start["t"], middle["t"], end["t"]] == [0.0, 0.5, 1.0]
        assert start["accuracy"] == pytest.approx(local["accuracy"])
        assert start["predicted"] == local["predicted"]
        assert end["accuracy"] == pytest.approx(report["merged"]["accuracy"])
        assert end["accuracy_recalibrated"] == pytest.approx(
            report["merged_recalibrated"]["accuracy"]
        )
        assert end["predicted_recalibrated"] == report["merged_recalibrated"]["predicted"]
