"""Real little models and data for the worker tests: a ResNet-18 base for BloodMNIST
(8 classes, RGB, 28x28), hospital vectors fine-tuned briefly on real BloodMNIST
training images, and a held-out benchmark cut from the real test and val splits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from medvec.data import ImageArrayDataset
from medvec.models import ModelSpec, build_model, load_model_file, save_model_file
from medvec.vectors import VectorMetadata, compute_vector, save_vector

SPEC = ModelSpec(arch="resnet18", num_classes=8, in_channels=3, image_size=28)
DATASET = "bloodmnist.npz"


def make_base(path: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    model = build_model(SPEC)
    return save_model_file(path, model, SPEC, provenance={"name": f"test-base-{seed}"})


def make_benchmark(datasets_dir: Path, path: Path, n_test: int = 1000, n_val: int = 300) -> Path:
    """The first ``n_test`` real test images and ``n_val`` val images, MedMNIST layout."""
    with np.load(datasets_dir / DATASET) as data:
        arrays = {
            "test_images": data["test_images"][:n_test],
            "test_labels": data["test_labels"][:n_test],
            "val_images": data["val_images"][:n_val],
            "val_labels": data["val_labels"][:n_val],
        }
    np.savez(path, **arrays)
    return path


def hospital_data(datasets_dir: Path, index: int, n: int = 96) -> ImageArrayDataset:
    """Hospital ``index``'s own slice of the real training split."""
    with np.load(datasets_dir / DATASET) as data:
        rows = slice(index * n, (index + 1) * n)
        return ImageArrayDataset(data["train_images"][rows], data["train_labels"][rows], 3)


def fine_tuned_vector(
    base_path: Path,
    out: Path,
    *,
    base_id: str,
    base_sha256: str,
    hospital: str,
    data: ImageArrayDataset,
    steps: int = 3,
    seed: int = 0,
) -> Path:
    """A few SGD steps on ``data`` from the base; the difference saved as a data vector."""
    torch.manual_seed(seed)
    model, spec = load_model_file(base_path)
    base_state = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model.train()
    for step in range(steps):
        rows = torch.arange(step * 32, (step + 1) * 32) % len(data)
        images, labels = data.batch(rows)
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(images), labels).backward()
        optimizer.step()
    tau = compute_vector(base_state, model.state_dict())
    return _save(out, tau, base_id, base_sha256, hospital, len(data), spec)


def perturbed_vector(
    base_path: Path, out: Path, *, base_id: str, base_sha256: str, hospital: str, seed: int
) -> Path:
    """Seeded small noise on every weight: a valid vector that costs no training."""
    model, spec = load_model_file(base_path)
    state = model.state_dict()
    generator = torch.Generator().manual_seed(seed)
    tuned = {
        k: v + 1e-3 * torch.randn(v.shape, generator=generator) if v.is_floating_point() else v
        for k, v in state.items()
    }
    return _save(out, compute_vector(state, tuned), base_id, base_sha256, hospital, 50, spec)


def _save(
    out: Path,
    tau: dict[str, torch.Tensor],
    base_id: str,
    base_sha256: str,
    hospital: str,
    num_samples: int,
    spec: ModelSpec,
) -> Path:
    metadata = VectorMetadata(
        base_id=base_id,
        base_sha256=base_sha256,
        hospital=hospital,
        num_samples=num_samples,
        spec=spec,
    )
    return save_vector(out, tau, metadata)


def accuracy_by_hand(model_path: Path, npz_path: Path, split: str = "test") -> tuple[float, int]:
    """Independent check: run the model file on the raw arrays, count hits with numpy."""
    model, _spec = load_model_file(model_path)
    model.eval()
    with np.load(npz_path) as data:
        images = data[f"{split}_images"].astype(np.float32) / 255.0
        labels = data[f"{split}_labels"].reshape(-1)
    pixels = torch.from_numpy(images).permute(0, 3, 1, 2)
    pixels = (pixels - 0.5) / 0.5
    with torch.no_grad():
        logits = torch.cat([model(pixels[i : i + 250]) for i in range(0, len(pixels), 250)])
    predicted = logits.argmax(dim=1).numpy()
    return float(np.mean(predicted == labels)), int(len(labels))
