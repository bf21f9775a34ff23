"""Local work on a hospital machine: fine-tune the base into a data vector; evaluate; predict.

Thin orchestration over the core library (``medvec.data``, ``medvec.training``,
``medvec.vectors``, ``medvec.privacy``); the commands only parse and render.
Torch is imported lazily so that ``medvec login`` stays instant.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hospital_cli.errors import CliError
from medvec.models.spec import ModelSpec
from medvec.training_config import TrainConfig

if TYPE_CHECKING:
    from torch import Tensor, nn

DP_DELTA = 1e-5


@dataclass(frozen=True)
class TrainRequest:
    """One `medvec train` run. ``recipe`` holds the training settings; the ``dp_*``
    fields are the command's privacy options: DP-SGD in the loop with ``dp_sgd``,
    otherwise clipping (and noising) of the finished vector."""

    base: Path
    base_record: dict[str, Any]
    data: Path
    out: Path
    hospital: str
    recipe: TrainConfig = field(default_factory=TrainConfig)
    val_fraction: float = 0.1
    device: str | None = None
    max_samples: int | None = None
    dp_clip: float | None = None
    dp_noise: float | None = None
    dp_sgd: bool = False
    dp_delta: float = DP_DELTA
    save_model: Path | None = None
    continue_from: Path | None = None
    extra: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.train_config()  # a combination the loop refuses fails before any work
        if self.continue_from is not None and (self.dp_sgd or self.dp_noise):
            # the vector holds the earlier job's steps too, which this run's privacy
            # record (one release, or this run's DP-SGD history) would not account for
            raise CliError(
                "--continue-from cannot be combined with --dp-noise or --dp-sgd: the vector "
                "would hold the earlier job's training too, and its epsilon would count this "
                "job's only",
                hint="train from the base (drop --continue-from) to release a private vector",
            )

    def train_config(self) -> TrainConfig:
        """What ``fine_tune`` runs and the vector records: the recipe, plus DP-SGD when asked."""
        return TrainConfig.model_validate({**self.recipe.model_dump(), **_dp_sgd_settings(self)})


@dataclass(frozen=True)
class Continued:
    """Where a continued job starts: the earlier ``--save-model`` file, checked to be a
    fine-tuning of the very base the vector is computed against."""

    model: nn.Module
    sha256: str
    cumulative_steps: int | None  # the earlier jobs' optimiser steps, when recorded


CONTINUE_HINT = (
    "continue only from the --save-model file of your own last job on this base; "
    "once production moved, train from the pulled base"
)


def load_continued(
    path: Path, base_sha256: str, base_spec: ModelSpec, base_state: Mapping[str, Tensor]
) -> Continued:
    """The model a continued job starts from, or a ``CliError`` naming the mismatch.

    A model of another architecture or of another base would still give a vector of the
    right shape, silently wrong: ``finetuned - base`` must be one fine-tuning's work on
    this base. So the spec, the base ``--save-model`` recorded (its sha256) and every
    tensor's name, shape and dtype must all be the base's.
    """
    from medvec.errors import ModelError
    from medvec.hashing import sha256_file
    from medvec.models import load_model_file, read_model_provenance, read_model_spec

    try:
        spec = read_model_spec(path)
        provenance = read_model_provenance(path)
    except ModelError as exc:
        raise CliError(f"--continue-from: {exc.message}", hint=CONTINUE_HINT) from exc
    if spec != base_spec:
        raise CliError(
            f"--continue-from {path} is a {_spec_text(spec)} model, the base a "
            f"{_spec_text(base_spec)} one",
            hint=CONTINUE_HINT,
        )
    origin = provenance.get("finetuned_from")
    if not isinstance(origin, str):
        raise CliError(
            f"--continue-from {path} records no base it was fine-tuned from "
            "(it was not written by `medvec train --save-model`)",
            hint=CONTINUE_HINT,
        )
    if origin != base_sha256:
        raise CliError(
            f"--continue-from {path} was fine-tuned from base {origin[:12]}, "
            f"not from this base {base_sha256[:12]}",
            hint=CONTINUE_HINT,
        )
    try:
        model, _ = load_model_file(path, device="cpu")
    except ModelError as exc:
        raise CliError(f"--continue-from: {exc.message}", hint=CONTINUE_HINT) from exc
    mismatch = _state_mismatch(base_state, model.state_dict())
    if mismatch:
        raise CliError(
            f"--continue-from {path} does not match the base: {mismatch}", hint=CONTINUE_HINT
        )
    steps = provenance.get("cumulative_steps")
    known = isinstance(steps, int) and not isinstance(steps, bool)
    return Continued(model, sha256_file(path), steps if known else None)


def _spec_text(spec: ModelSpec) -> str:
    return (
        f"{spec.arch} ({spec.num_classes} classes, {spec.in_channels} channels, "
        f"{spec.image_size} px, stem {spec.stem})"
    )


def _state_mismatch(base: Mapping[str, Tensor], other: Mapping[str, Tensor]) -> str | None:
    """The first tensor whose name, shape or dtype differs from the base's, described."""
    missing = [k for k in base if k not in other]
    extra = [k for k in other if k not in base]
    if missing or extra:
        return f"{len(missing)} tensors missing, {len(extra)} unexpected"
    for key, tensor in base.items():
        if tuple(other[key].shape) != tuple(tensor.shape):
            return f"{key!r} has shape {tuple(other[key].shape)}, the base's {tuple(tensor.shape)}"
        if other[key].dtype != tensor.dtype:
            return f"{key!r} is {other[key].dtype}, the base's is {tensor.dtype}"
    return None


@dataclass
class TrainOutcome:
    vector: Path
    metrics_path: Path
    metadata: dict[str, Any]
    metrics: dict[str, Any]


def check_classes(dataset: Any, num_classes: int, data: Path) -> None:
    """Refuse labels the model has no output for (before any training or evaluation)."""
    labels = dataset.labels
    highest = int(labels.max()) if len(labels) else -1
    if highest >= num_classes:
        raise CliError(
            f"{data} has labels up to {highest} but the model has {num_classes} classes",
            hint="use a base or model made for this dataset's classes",
        )


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Seeded shuffle, then the first ``val_fraction`` of it is the validation part."""
    import torch

    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    n_val = int(round(n * val_fraction)) if val_fraction > 0 else 0
    if n_val and n - n_val < 1:
        raise CliError(f"--val-fraction {val_fraction} leaves no training samples")
    return order[n_val:], order[:n_val]


def label_histogram(labels: Any, indices: list[int]) -> dict[str, int]:
    import numpy as np

    flat = np.asarray(labels).reshape(len(labels), -1)[:, 0]
    counts = Counter(int(flat[i]) for i in indices)
    return {str(k): v for k, v in sorted(counts.items())}


def _dp_vector(
    tensors: Mapping[str, Tensor], request: TrainRequest
) -> tuple[Mapping[str, Tensor], dict[str, Any]]:
    """Clip the vector's L2 norm to C, add N(0, (sigma*C)^2), account (Gaussian mechanism)."""
    from medvec.privacy import add_gaussian_noise, clip_by_l2, gaussian_epsilon

    clip = request.dp_clip
    if clip is None:
        raise CliError("--dp-noise needs --dp-clip (the noise is scaled by the clipping bound)")
    tensors = clip_by_l2(tensors, clip)
    privacy: dict[str, Any] = {"dp_sgd": False, "dp_clip": clip}
    if request.dp_noise:
        # from the OS CSPRNG: the recorded --seed must not regenerate (and remove) the noise
        tensors = add_gaussian_noise(tensors, request.dp_noise * clip)
        privacy.update(
            dp_noise=request.dp_noise,
            noise_std=request.dp_noise * clip,
            delta=request.dp_delta,
            epsilon=gaussian_epsilon(request.dp_noise, request.dp_delta),
            accountant="gaussian",
        )
    return tensors, privacy


def _lineage(continued: Continued | None, steps: int) -> dict[str, int]:
    """``cumulative_steps``: the optimiser steps since the base, when every job recorded
    its own (a model saved before steps were recorded leaves the total unknown)."""
    if continued is None:
        return {"cumulative_steps": steps}
    if continued.cumulative_steps is None:
        return {}
    return {"cumulative_steps": continued.cumulative_steps + steps}


def _dp_sgd_settings(request: TrainRequest) -> dict[str, Any]:
    """DP-SGD settings for the training loop; vector-level DP is applied after training."""
    if not request.dp_sgd:
        return {}
    return {
        "dp_sgd": True,
        "dp_clip": request.dp_clip,
        "dp_noise": request.dp_noise,
        "dp_delta": request.dp_delta,
    }


def train_vector(
    request: TrainRequest, *, on_step: Callable[..., None] | None = None
) -> TrainOutcome:
    """Fine-tune the base on local data and write vector + validation metrics beside it.

    With ``continue_from`` the run starts from that earlier fine-tuning of the same base
    (only its weights: the optimiser and schedule start afresh), and the vector, still
    ``finetuned - base``, holds the earlier jobs' work and this one's.
    """
    from torch.utils.data import Subset

    from medvec.data import load_dataset
    from medvec.models import load_model_file, save_model_file
    from medvec.training import fine_tune, resolve_device
    from medvec.vectors import VectorMetadata, compute_vector, save_vector

    device = resolve_device(request.device)
    model, spec = load_model_file(request.base, device="cpu")
    base_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    continued = None
    if request.continue_from is not None:
        base_sha256 = str(request.base_record["sha256"])
        continued = load_continued(request.continue_from, base_sha256, spec, base_state)
        model = continued.model
    dataset = load_dataset(
        request.data, split="train", in_channels=spec.in_channels, image_size=spec.image_size
    )
    check_classes(dataset, spec.num_classes, request.data)
    n_total = len(dataset)
    if request.max_samples:
        n_total = min(n_total, request.max_samples)
    config = request.train_config()
    train_idx, val_idx = split_indices(n_total, request.val_fraction, config.seed)
    result = fine_tune(model, Subset(dataset, train_idx), config, device=device, on_step=on_step)
    model = model.to("cpu")
    tensors: Mapping[str, Tensor] = compute_vector(base_state, model.state_dict())
    privacy: dict[str, Any] = dict(getattr(result, "privacy", None) or {})
    if (request.dp_clip is not None or request.dp_noise is not None) and not request.dp_sgd:
        tensors, privacy = _dp_vector(tensors, request)
    metrics = _local_metrics(model, Subset(dataset, val_idx), device, config.batch_size)
    lineage = _lineage(continued, result.steps)
    metadata = VectorMetadata(
        base_id=str(request.base_record.get("id") or request.base_record["sha256"]),
        base_sha256=str(request.base_record["sha256"]),
        hospital=request.hospital,
        num_samples=len(train_idx),
        label_histogram=label_histogram(dataset.labels, train_idx),
        training={
            **config.model_dump(),
            "device": str(device),
            "data": request.data.name,
            **({"continued_from": continued.sha256, **lineage} if continued else {}),
        },
        privacy=privacy,
        spec=spec,
        extra=request.extra,
    )
    request.out.parent.mkdir(parents=True, exist_ok=True)
    save_vector(request.out, tensors, metadata)
    if request.save_model is not None:
        provenance = {
            "finetuned_from": metadata.base_sha256,  # what --continue-from checks
            "vector": request.out.name,
            **({"continued_from": continued.sha256} if continued else {}),
            **lineage,
        }
        save_model_file(request.save_model, model, spec, provenance=provenance)
    metrics_path = _write_metrics(request.out, len(val_idx), metrics)
    return TrainOutcome(request.out, metrics_path, json.loads(metadata.model_dump_json()), metrics)


def _local_metrics(model: nn.Module, held_out: Any, device: Any, batch_size: int) -> dict[str, Any]:
    """The model's metrics on the hospital's own held-out images (none: empty)."""
    from medvec.evaluation import evaluate_model

    if not len(held_out):
        return {}
    metrics = evaluate_model(model, held_out, device=device, batch_size=batch_size)
    return metrics.model_dump() if hasattr(metrics, "model_dump") else dict(metrics)


def _write_metrics(vector: Path, held_out: int, metrics: dict[str, Any]) -> Path:
    """``<vector>.metrics.json`` beside the vector, written whole or not at all."""
    path = vector.with_suffix(".metrics.json")
    report = {"split": "local-validation", "n": held_out, "metrics": metrics}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=2, default=str))
    os.replace(tmp, path)
    return path
