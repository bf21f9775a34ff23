"""Make a strong shared base without internet access: pretrain on other sets, re-head.

No ImageNet weights can be downloaded here, so MedVec's default base is a ResNet
pretrained from scratch on *other* MedMNIST sets than the target (by default the
known ones present: OrganAMNIST's abdominal CT, PneumoniaMNIST's chest X-rays,
BloodMNIST's blood-cell microscopy, minus the target), with one joint label space,
then given a fresh classification head for the target's classes. Merging works
best from a strong shared base (Neyshabur et al., NeurIPS 2020; Wortsman et al.,
model soups, ICML 2022), so pretraining runs to a step budget with the full
training recipe, once: both steps are cached under a key derived from every
setting that changes the weights. A local torchvision checkpoint (for example
ImageNet weights copied onto the machine) can be imported instead.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from medvec.data.download import ensure_medmnist
from medvec.errors import DatasetError, ModelError
from medvec.models import (
    ModelSpec,
    build_model,
    load_torchvision_checkpoint,
    save_model_file,
)
from medvec.models.resnet import INITIALISATION

__all__ = [
    "DEFAULT_SOURCES",
    "PretrainConfig",
    "base_from_checkpoint",
    "ensure_base",
    "ensure_pretrained",
    "pretrain_arch",
]

StepFn = Callable[..., None]

DEFAULT_SOURCES = ("organamnist", "pneumoniamnist", "bloodmnist")
"""The pretraining sets; ``PretrainConfig.excluding`` drops a target from them."""


class PretrainConfig(BaseModel):
    """Every setting that changes the pretrained weights (and so the cache key).

    The budget is ``steps`` optimiser steps of ``batch_size`` images drawn from the
    union of ``sources`` (each capped at ``max_samples`` images), with the training
    recipe of ``medvec.training`` (SGD, warm-up + cosine, flips and crops).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    sources: tuple[str, ...] = DEFAULT_SOURCES
    arch: str = "resnet18"
    stem: Literal["auto", "small", "strided", "imagenet"] = "auto"
    in_channels: int = Field(default=3, ge=1)
    image_size: int = Field(default=28, ge=8)
    max_samples: int | None = Field(default=None, ge=1)
    steps: int = Field(default=500, ge=1)
    lr: float = Field(default=0.1, gt=0)
    weight_decay: float = Field(default=5e-4, ge=0)
    batch_size: int = Field(default=128, ge=1)
    seed: int = 0

    def key(self) -> str:
        """Short stable hash of the settings and of the builders' initialisation: the
        cache file name's suffix."""
        settings = {**self.model_dump(), "initialisation": INITIALISATION}
        payload = json.dumps(settings, sort_keys=True).encode()
        return hashlib.sha256(payload).hexdigest()[:16]

    def excluding(self, target: str) -> PretrainConfig:
        """This config without ``target`` among its sources: a base never sees its target."""
        name = target.lower().removesuffix(".npz")
        return self.model_copy(update={"sources": tuple(s for s in self.sources if s != name)})

    def spec(self, num_classes: int) -> ModelSpec:
        return ModelSpec(
            arch=self.arch,
            num_classes=num_classes,
            in_channels=self.in_channels,
            image_size=self.image_size,
            stem=self.stem,
        )


def pretrain_arch(arch: str) -> str:
    """The plain ResNet that pretrains ``arch``: FL-RA models take the ResNet part of it.

    FL-RA's attention starts silent (a zero output projection), so an FL-RA model
    loaded from a ResNet checkpoint computes exactly the pretrained ResNet until
    fine-tuning moves the attention.
    """
    return arch.removeprefix("flra_")


def _capped(pixels: torch.Tensor, labels: torch.Tensor, cap: int | None, seed: int) -> Any:
    if cap is None or cap >= len(labels):
        return pixels, labels
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))[:cap]
    return pixels[order], labels[order]


def _with_channels(pixels: torch.Tensor, channels: int) -> torch.Tensor:
    """uint8 pixels with ``channels`` channels (grey repeated, RGB averaged), so that
    grey and RGB sources stack into one set."""
    from medvec.data import match_channels

    if pixels.shape[1] == channels:
        return pixels
    return match_channels(pixels.float(), channels).round().to(torch.uint8).contiguous()


def joint_training_set(config: PretrainConfig, folder: Path) -> Any:
    """The union of the sources' train splits, labels offset into one joint label space."""
    from medvec.data import ImageArrayDataset, load_medmnist

    if not config.sources:
        raise DatasetError("no pretraining source given", hint="name at least one dataset")
    images, labels, classes = [], [], 0
    for number, source in enumerate(config.sources):
        ensure_medmnist(source, folder)
        data = load_medmnist(
            source,
            "train",
            folder,
            in_channels=config.in_channels,
            image_size=config.image_size,
        )
        pixels, targets = _capped(
            data.pixels, data.labels, config.max_samples, config.seed + number
        )
        images.append(_with_channels(pixels, config.in_channels))
        labels.append(targets + classes)
        classes += data.num_classes
    # ImageArrayDataset takes channels-last arrays, as the .npz files store them
    nhwc = torch.cat(images).permute(0, 2, 3, 1).numpy()
    return ImageArrayDataset(nhwc, np.concatenate([t.numpy() for t in labels]), config.in_channels)


def ensure_pretrained(
    config: PretrainConfig,
    cache_dir: Path,
    *,
    datasets_dir: Path | None = None,
    device: str | None = None,
    on_step: StepFn | None = None,
) -> Path:
    """Path of the model pretrained per ``config``; trains and caches it when missing."""
    from medvec.data import resolve_datasets_dir
    from medvec.training import TrainConfig, fine_tune, resolve_device

    name = "+".join(config.sources)
    path = cache_dir / f"pretrained-{name}-{config.arch}-{config.key()}.safetensors"
    if path.is_file():
        return path
    train_set = joint_training_set(config, resolve_datasets_dir(datasets_dir))
    spec = config.spec(train_set.num_classes)
    torch.manual_seed(config.seed)
    model = build_model(spec)
    # the recipe the cache key stands for, spelled out: TrainConfig's defaults may change
    # without changing the key (a cached base would then differ from a fresh one)
    train_config = TrainConfig(
        steps=config.steps,
        lr=config.lr,
        batch_size=config.batch_size,
        seed=config.seed,
        optimizer="sgd",
        momentum=0.9,
        nesterov=True,
        weight_decay=config.weight_decay,
        schedule="cosine",
        warmup=0.05,
        augment=True,
    )
    result = fine_tune(
        model, train_set, train_config, device=resolve_device(device), on_step=on_step
    )
    provenance = {
        "name": f"{config.arch} pretrained on {', '.join(config.sources)}",
        "pretraining": config.model_dump(),
        "num_samples": len(train_set),
        "train_loss": result.loss,
        "train_accuracy": result.accuracy,
        "seconds": result.seconds,
    }
    cache_dir.mkdir(parents=True, exist_ok=True)
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
    it comes from a model pretrained per ``config`` (default: ``PretrainConfig()`` for
    the target's architecture and stem; callers that know the target's dataset pass
    ``config.excluding(dataset)``).
    """
    cache_dir.mkdir(parents=True, exist_ok=True)
    if checkpoint is not None:
        source, tag = checkpoint, hashlib.sha256(str(checkpoint.resolve()).encode()).hexdigest()
        tag = tag[:12]
        provenance: dict[str, Any] = {}
    else:
        config = config or PretrainConfig(
            arch=pretrain_arch(target.arch),
            stem=target.stem,
            in_channels=target.in_channels,
            image_size=target.image_size,
        )
        source = ensure_pretrained(
            config, cache_dir, datasets_dir=datasets_dir, device=device, on_step=on_step
        )
        tag, provenance = config.key(), {"pretraining": config.model_dump()}
    stem = "" if target.stem == "auto" else f"-{target.stem}"
    out = cache_dir / (
        f"base-{target.arch}{stem}-c{target.num_classes}-ch{target.in_channels}"
        f"-s{target.image_size}-{tag}.safetensors"
    )
    if out.is_file():
        return out
    return base_from_checkpoint(target, source, out, provenance=provenance)
