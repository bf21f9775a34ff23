"""Honest and poisoned hospitals on real MedMNIST images, for screening tests and benchmarks.

The base is a ResNet-10 (strided 28 px stem: cheap on a CPU) pretrained on a public
slice of the target's training images; each hospital fine-tunes it on its own slice. Four hospitals
misbehave, each in a way the registry's upload checks cannot see:

- ``label_flip``: trains on its images with every label ``y`` replaced by ``K - 1 - y``;
- ``scaled``: trains honestly, then boosts its update ×50 (a model-replacement attack);
- ``noise``: sends Gaussian noise with the norm of an honest update;
- ``foreign``: trains on images of another dataset (OrganAMNIST), labels folded into
  the target's classes (``y mod K``), so its update is fitted to the wrong images.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from medvec.data import ImageArrayDataset, load_npz
from medvec.hashing import sha256_file
from medvec.models import ModelSpec, build_model, load_model_file, save_model_file
from medvec.training import fine_tune
from medvec.training_config import TrainConfig
from medvec.vectors import VectorMetadata, compute_vector, load_vector, save_vector

__all__ = ["POISONS", "PoisonScenario", "build_scenario"]

POISONS = ("label_flip", "scaled", "noise", "foreign")
TARGET = "bloodmnist.npz"
FOREIGN = "organamnist.npz"
SCALE = 50.0


@dataclass
class PoisonScenario:
    """Files of one scenario: the base, each hospital's vector, and the target's images."""

    base_path: Path
    spec: ModelSpec
    honest: dict[str, Path] = field(default_factory=dict)
    poisoned: dict[str, Path] = field(default_factory=dict)
    num_samples: dict[str, int] = field(default_factory=dict)

    @property
    def vectors(self) -> dict[str, Path]:
        return {**self.honest, **self.poisoned}


def _subset(data: ImageArrayDataset, start: int, count: int) -> ImageArrayDataset:
    """``count`` items of ``data`` from ``start``, as a dataset of their own (its labels
    can be changed without touching ``data``'s)."""
    rows = slice(start, start + count)
    channels_last = data.pixels[rows].permute(0, 2, 3, 1).numpy()
    return ImageArrayDataset(channels_last, data.labels[rows].clone(), data.in_channels)


def _train(
    base_path: Path, data: ImageArrayDataset, *, epochs: int, seed: int
) -> dict[str, Tensor]:
    """Fine-tune the base on ``data``; the data vector (tuned - base)."""
    model, _spec = load_model_file(base_path)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    config = TrainConfig(epochs=epochs, lr=0.01, batch_size=32, augment=False, seed=seed)
    fine_tune(model, data, config, device="cpu")
    return compute_vector(before, model.state_dict())


def _save(
    out: Path, tensors: dict[str, Tensor], base_sha256: str, hospital: str, samples: int,
    spec: ModelSpec,
) -> Path:  # fmt: skip
    metadata = VectorMetadata(
        base_id=base_sha256, base_sha256=base_sha256, hospital=hospital,
        num_samples=samples, spec=spec,
    )  # fmt: skip
    return save_vector(out, tensors, metadata)


def _norm(tensors: dict[str, Tensor]) -> float:
    return math.sqrt(sum(float(t.double().square().sum()) for t in tensors.values()))


def _noise_like(tensors: dict[str, Tensor], norm: float, seed: int) -> dict[str, Tensor]:
    generator = torch.Generator().manual_seed(seed)
    noise = {
        k: torch.randn(v.shape, generator=generator, dtype=v.dtype) for k, v in tensors.items()
    }
    factor = norm / _norm(noise)
    return {k: v * factor for k, v in noise.items()}


def _pretrain_base(out: Path, target: ImageArrayDataset, spec: ModelSpec, seed: int) -> Path:
    torch.manual_seed(seed)
    model = build_model(spec)
    config = TrainConfig(epochs=2, lr=0.05, batch_size=64, augment=False, seed=seed)
    fine_tune(model, target, config, device="cpu")
    return save_model_file(out, model, spec, {"name": "screening-base", "pretrained_on": TARGET})


def build_scenario(
    datasets_dir: Path,
    out: Path,
    *,
    honest: int = 4,
    per_hospital: int = 192,
    public: int = 1024,
    arch: str = "resnet10",
    seed: int = 0,
) -> PoisonScenario:
    """Pretrain the base, then write ``honest`` honest vectors and one of each poison."""
    out.mkdir(parents=True, exist_ok=True)
    spec = ModelSpec(arch=arch, num_classes=8, in_channels=3, image_size=28, stem="strided")
    target = load_npz(datasets_dir / TARGET, "train", in_channels=3, image_size=28)
    base_path = _pretrain_base(out / "base.safetensors", _subset(target, 0, public), spec, seed)
    base_sha = sha256_file(base_path)
    scenario = PoisonScenario(base_path, spec)

    def shard(index: int) -> ImageArrayDataset:
        return _subset(target, public + index * per_hospital, per_hospital)

    def keep(name: str, tensors: dict[str, Tensor], poisoned: bool) -> None:
        path = _save(out / f"{name}.safetensors", tensors, base_sha, name, per_hospital, spec)
        (scenario.poisoned if poisoned else scenario.honest)[name] = path
        scenario.num_samples[name] = per_hospital

    honest_norms = []
    for index in range(honest):
        tensors = _train(base_path, shard(index), epochs=1, seed=seed + index)
        honest_norms.append(_norm(tensors))
        keep(f"honest-{index}", tensors, poisoned=False)
    flipped = shard(honest)
    flipped.labels = (spec.num_classes - 1) - flipped.labels
    keep("label_flip", _train(base_path, flipped, epochs=1, seed=seed + 100), poisoned=True)
    boosted = _train(base_path, shard(honest + 1), epochs=1, seed=seed + 101)
    keep("scaled", {k: v * SCALE for k, v in boosted.items()}, poisoned=True)
    typical = statistics.median(honest_norms)
    keep("noise", _noise_like(boosted, typical, seed + 102), poisoned=True)
    foreign = load_npz(datasets_dir / FOREIGN, "train", in_channels=3, image_size=28)
    foreign = _subset(foreign, 0, per_hospital)
    foreign.labels = foreign.labels % spec.num_classes
    keep("foreign", _train(base_path, foreign, epochs=1, seed=seed + 103), poisoned=True)
    return scenario


def vector_tensors(path: Path) -> dict[str, Tensor]:
    tensors, _metadata = load_vector(path)
    return dict(tensors)


def target_split(datasets_dir: Path, split: str, count: int | None = None) -> ImageArrayDataset:
    data = load_npz(datasets_dir / TARGET, split, in_channels=3, image_size=28)
    return data if count is None else _subset(data, 0, count)
