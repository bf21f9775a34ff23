"""Make a base model without internet access: pretrain on another public dataset, re-head.

No ImageNet weights can be downloaded here, so MedVec's default base is a ResNet
pretrained on OrganAMNIST (abdominal CT, 11 organs) — a different modality and task
from the targets (chest X-ray, blood cells) — and then given a fresh classification
head for the target's classes. A local torchvision checkpoint (for example ImageNet
weights copied onto the machine) can be imported instead.

Both steps are cached under a key derived from every setting that changes the
weights, so repeated demos and simulations reuse the same pretrained base.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field

from medvec.data.download import ensure_medmnist
from medvec.errors import ModelError
from medvec.models import (
    ModelSpec,
    build_model,
    load_torchvision_checkpoint,
    save_model_file,
)

__all__ = [
    "PretrainConfig",
    "base_from_checkpoint",
    "ensure_base",
    "ensure_pretrained",
    "pretrain_arch",
]

StepFn = Callable[..., None]


class PretrainConfig(BaseModel):
    """Every setting that changes the pretrained weights (and so the cache key)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    source: str = "organamnist"
    arch: str = "resnet18"
    in_channels: int = Field(default=3, ge=1)
    image_size: int = Field(default=28, ge=8)
    max_samples: int | None = Field(default=3000, ge=1)
    epochs: int = Field(default=1, ge=1)
    lr: float = Field(default=1e-3, gt=0)
    batch_size: int = Field(default=64, ge=1)
    seed: int = 0

    def key(self) -> str:
        """Short stable hash of the settings: the cache file name's suffix."""
        payload = json.dumps(self.model_dump(), sort_keys=True).encode()
        return hashlib.sha256(payload).hexdigest()[:16]


def pretrain_arch(arch: str) -> str:
    """The plain ResNet that pretrains ``arch``: FL-RA models take the ResNet part of it.

    FL-RA's attention starts at ``alpha = 0``, so an FL-RA model loaded from a ResNet
    checkpoint computes exactly the pretrained ResNet until fine-tuning moves alpha.
    """
    return arch.removeprefix("flra_")


def _subset(dataset: Any, max_samples: int | None, seed: int) -> Any:
    from torch.utils.data import Subset

    n = len(dataset)
    if max_samples is None or max_samples >= n:
        return dataset
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:max_samples]
    return Subset(dataset, order.tolist())


def ensure_pretrained(
    config: PretrainConfig,
    cache_dir: Path,
    *,
    datasets_dir: Path | None = None,
    device: str | None = None,
    on_step: StepFn | None = None,
) -> Path:
    """Path of the model pretrained on ``config.source``; trains and caches it when missing."""
    from medvec.data import load_medmnist, resolve_datasets_dir
    from medvec.training import TrainConfig, fine_tune, resolve_device

    path = cache_dir / f"pretrained-{config.source}-{config.arch}-{config.key()}.safetensors"
    if path.is_file():
        return path
    folder = resolve_datasets_dir(datasets_dir)
    ensure_medmnist(config.source, folder)
    dataset = load_medmnist(
        config.source,
        "train",
        folder,
        in_channels=config.in_channels,
        image_size=config.image_size,
    )
    num_classes = int(torch.as_tensor(dataset.labels).max().item()) + 1
    spec = ModelSpec(
        arch=config.arch,
        num_classes=num_classes,
        in_channels=config.in_channels,
        image_size=config.image_size,
    )
    torch.manual_seed(config.seed)
    model = build_model(spec)
    # the recipe the cache key stands for, spelled out: TrainConfig's defaults may change
    # without changing the key (a cached base would then differ from a fresh one)
    train_config = TrainConfig(
        epochs=config.epochs,
        lr=config.lr,
        batch_size=config.batch_size,
        seed=config.seed,
        augment=False,
        optimizer="adam",
        weight_decay=0.0,
        schedule="constant",
        warmup=0.0,
    )
    train_set = _subset(dataset, config.max_samples, config.seed)
    fine_tune(model, train_set, train_config, device=resolve_device(device), on_step=on_step)
    provenance = {
        "name": f"{config.arch} pretrained on {config.source}",
        "pretraining": config.model_dump(),
        "num_samples": len(train_set),
    }
    return save_model_file(path, model.to("cpu"), spec, provenance=provenance)


def base_from_checkpoint(
    target: ModelSpec,
    checkpoint: Path,
    out: Path,
    *,
    seed: int = 0,
    provenance: dict[str, Any] | None = None,
) -> Path:
    """A base for ``target``: every key of ``checkpoint`` that fits, a fresh seeded head.

    ``checkpoint`` is a torchvision-format state dict (``.pth``/``.pt``) or a MedVec
    model file; ``fc.*`` keys of another class count stay freshly initialised.
    """
    torch.manual_seed(seed)
    model = build_model(target)
    report = load_torchvision_checkpoint(model, checkpoint)
    if not report.loaded:
        raise ModelError(
            f"no weight of {checkpoint} fits {target.arch}",
            hint="give a checkpoint of the same ResNet depth",
        )
    record = {
        "name": f"{target.arch} from {checkpoint.name}",
        "checkpoint": checkpoint.name,
        "import": report.summary(),
        **(provenance or {}),
    }
    return save_model_file(out, model, target, provenance=record)


def ensure_base(
    target: ModelSpec,
    cache_dir: Path,
    *,
    config: PretrainConfig | None = None,
    checkpoint: Path | None = None,
    datasets_dir: Path | None = None,
    device: str | None = None,
    on_step: StepFn | None = None,
) -> Path:
    """The cached base model file for ``target``.

    With ``checkpoint`` the base imports that local torchvision checkpoint; otherwise
    it comes from a model pretrained per ``config`` (default: ResNet on OrganAMNIST).
    """
    cache_dir.mkdir(parents=True, exist_ok=True)
    if checkpoint is not None:
        source, tag = checkpoint, hashlib.sha256(str(checkpoint.resolve()).encode()).hexdigest()
        tag = tag[:12]
        provenance: dict[str, Any] = {}
    else:
        config = config or PretrainConfig(
            arch=pretrain_arch(target.arch),
            in_channels=target.in_channels,
            image_size=target.image_size,
        )
        source = ensure_pretrained(
            config, cache_dir, datasets_dir=datasets_dir, device=device, on_step=on_step
        )
        tag, provenance = config.key(), {"pretraining": config.model_dump()}
    out = cache_dir / (
        f"base-{target.arch}-c{target.num_classes}-ch{target.in_channels}"
        f"-s{target.image_size}-{tag}.safetensors"
    )
    if out.is_file():
        return out
    return base_from_checkpoint(target, source, out, provenance=provenance)
