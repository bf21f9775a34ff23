"""ONNX export: onnxruntime's outputs on real MedMNIST images equal PyTorch's to 1e-4."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from medvec.data import load_medmnist
from medvec.errors import ModelError
from medvec.models import ModelSpec, build_model
from medvec.models.export import INPUT_NAME, export_onnx, read_onnx_metadata

TOLERANCE = 1e-4


def _images(datasets_dir: Path, name: str, count: int) -> torch.Tensor:
    """``count`` test images of ``name`` through the evaluation transform, 3 channels."""
    dataset = load_medmnist(name, "test", datasets_dir, in_channels=3)
    return torch.stack([dataset[i][0] for i in range(count)])


def _trained_looking(spec: ModelSpec) -> torch.nn.Module:
    """A model whose BatchNorm statistics are not the identity, as after training."""
    torch.manual_seed(0)
    model = build_model(spec)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            assert module.running_mean is not None and module.running_var is not None
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 2.0)
    return model.eval()


@pytest.mark.parametrize(
    ("arch", "dataset", "classes"),
    [("resnet18", "pneumoniamnist", 2), ("flra_resnet18", "bloodmnist", 8)],
)
def test_onnxruntime_matches_pytorch_on_real_images(
    datasets_dir: Path, tmp_path: Path, arch: str, dataset: str, classes: int
) -> None:
    spec = ModelSpec(arch=arch, num_classes=classes, in_channels=3, image_size=28)
    model = _trained_looking(spec)
    path = export_onnx(model, spec, tmp_path / "model.onnx", provenance={"version": "v1"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]  # no partial left
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for count in (1, 64):  # the batch axis is dynamic
        images = _images(datasets_dir, dataset, count)
        with torch.no_grad():
            expected = model(images).numpy()
        (logits,) = session.run(None, {INPUT_NAME: images.numpy()})
        assert logits.shape == (count, classes)
        np.testing.assert_allclose(logits, expected, atol=TOLERANCE, rtol=0)
    assert np.ptp(expected, axis=0).max() > 1e-2  # the images give different outputs
    probs = torch.softmax(torch.from_numpy(logits), dim=1).numpy()
    np.testing.assert_allclose(probs, torch.softmax(model(images), 1).detach().numpy(), atol=1e-5)
    metadata = read_onnx_metadata(path)
    assert ModelSpec.model_validate(metadata["spec"]) == spec
    assert metadata["provenance"] == {"version": "v1"}
    assert metadata["preprocessing"]["normalize"] == {"mean": 0.5, "std": 0.5}


def test_a_failed_export_leaves_no_file(tmp_path: Path) -> None:
    spec = ModelSpec(arch="resnet18", num_classes=2, in_channels=3, image_size=28)
    wrong = ModelSpec(arch="resnet18", num_classes=2, in_channels=5, image_size=28)
    model = build_model(spec)  # 3 input channels traced with 5: the export fails
    with pytest.raises(ModelError, match="could not export resnet18 to ONNX"):
        export_onnx(model, wrong, tmp_path / "model.onnx")
    assert list(tmp_path.iterdir()) == []
