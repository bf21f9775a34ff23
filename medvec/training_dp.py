"""DP-SGD fine-tuning with Opacus: per-sample clipping to ``dp_clip``, Gaussian noise
of std ``dp_noise * dp_clip`` on every step, Poisson sampling with rate
``batch_size / N``, accounted with the RDP accountant (``medvec.privacy``).

**BatchNorm is frozen, not replaced.** BatchNorm mixes samples of a batch, so it has
no per-sample gradient, and its running statistics would be an unaccounted release
of the data. Opacus's usual fix swaps BatchNorm for GroupNorm, but that changes the
state dict's keys and the vector would no longer fit its base. Instead every
BatchNorm layer stays in eval mode with its affine parameters frozen: it normalises
with the base's statistics, the vector holds zeros for those tensors, and what
leaves the hospital is covered by the accountant. Other layers Opacus cannot handle
are refused with a ``PrivacyError`` naming them. Mixed precision and channels-last
are off under DP-SGD (per-sample gradients are computed in float32). Noise comes
from torch's ordinary generator, seeded for reproducibility (Opacus's secure mode
needs a cryptographic RNG package and is not used).
"""

from __future__ import annotations

import time
import warnings
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.data import DataLoader, TensorDataset

from medvec.data.arrays import in_memory_arrays
from medvec.data.transforms import train_transform
from medvec.errors import DatasetError, PrivacyError
from medvec.privacy import dp_sgd_epsilon
from medvec.training import (
    PROGRESS_EVERY,
    RunningStats,
    StepFn,
    TrainConfig,
    TrainResult,
    finish_run,
    make_optimizer,
    make_scheduler,
    model_in_channels,
)

__all__ = ["fine_tune_dp", "freeze_batchnorm"]

ACCOUNTANT = "rdp"


def freeze_batchnorm(model: nn.Module) -> list[nn.Parameter]:
    """Put every BatchNorm layer in eval mode with frozen parameters; returns those parameters."""
    frozen = []
    for module in model.modules():
        if isinstance(module, _BatchNorm):
            module.eval()
            for param in module.parameters(recurse=False):
                if param.requires_grad:
                    param.requires_grad_(False)
                    frozen.append(param)
    return frozen


def _check_supported(model: nn.Module) -> None:
    from opacus.validators import ModuleValidator

    errors = ModuleValidator.validate(model, strict=False)
    if errors:
        raise PrivacyError(
            f"DP-SGD cannot train this model: {errors[0]}",
            hint="use a model whose layers Opacus supports (BatchNorm is frozen automatically)",
            errors=[str(e) for e in errors],
        )


def _pixel_loader(dataset: Any, batch_size: int) -> DataLoader[Any]:
    pixels, labels = in_memory_arrays(dataset, "DP-SGD")
    if labels.numel() == 0:
        raise DatasetError("cannot train on an empty dataset")
    return DataLoader(TensorDataset(pixels, labels), batch_size)


def fine_tune_dp(
    model: nn.Module,
    dataset: Any,
    config: TrainConfig,
    *,
    device: torch.device,
    on_step: StepFn | None = None,
) -> TrainResult:
    """DP-SGD version of ``medvec.training.fine_tune`` (same contract)."""
    try:
        from opacus import PrivacyEngine
    except ImportError as exc:
        raise PrivacyError("DP-SGD needs Opacus", hint="pip install 'medvec[client]'") from exc
    assert config.dp_clip is not None and config.dp_noise is not None
    torch.manual_seed(config.seed)
    model.to(device)
    channels = model_in_channels(model)
    frozen = freeze_batchnorm(model)
    _check_supported(model)
    optimizer = make_optimizer([p for p in model.parameters() if p.requires_grad], config)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Secure RNG turned off")
        engine = PrivacyEngine(accountant=ACCOUNTANT)
    dp_model, dp_optimizer, loader = engine.make_private(
        module=model,
        optimizer=optimizer,
        data_loader=_pixel_loader(dataset, config.batch_size),
        noise_multiplier=config.dp_noise,
        max_grad_norm=config.dp_clip,
        poisson_sampling=True,
    )
    generator = torch.Generator(device=device).manual_seed(config.seed)
    total = len(loader) * config.epochs
    scheduler = make_scheduler(dp_optimizer, total, config)
    step, seen, loss_value, acc_value = 0, 0, float("nan"), float("nan")
    started = time.perf_counter()
    try:
        for _ in range(config.epochs):
            dp_model.train()
            freeze_batchnorm(model)
            running = RunningStats(device)
            for pixels, labels in loader:
                pixels, labels = pixels.to(device), labels.to(device)
                images = train_transform(
                    pixels, channels, augment=config.augment, generator=generator
                )
                logits = dp_model(images)
                # an empty Poisson batch still takes a (noise-only) step, as accounted
                loss = (
                    F.cross_entropy(logits, labels, label_smoothing=config.label_smoothing)
                    if len(labels)
                    else logits.sum() * 0
                )
                dp_optimizer.zero_grad(set_to_none=True)
                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", message="Full backward hook is firing")
                    loss.backward()
                dp_optimizer.step()
                scheduler.step()
                if len(labels):
                    running.add(loss, logits, labels)
                step += 1
                if on_step is not None:
                    if step % PROGRESS_EVERY == 0 or step == total:
                        loss_value, acc_value = running.read()
                    on_step(step, total, loss=loss_value, acc=acc_value)
            loss_value, acc_value = running.read()
            seen += running.count
    finally:
        dp_model._close()
        for param in frozen:
            param.requires_grad_(True)
    return finish_run(
        model, device, started, config, steps=step, samples=seen,
        loss=loss_value, accuracy=acc_value, amp=False,
        privacy=_privacy_record(engine, config),
    )  # fmt: skip


def _privacy_record(engine: Any, config: TrainConfig) -> dict[str, Any]:
    """What the accountant saw, and the epsilon it gives at ``dp_delta``."""
    history = list(engine.accountant.history)
    noise, sample_rate = (history[0][0], history[0][1]) if history else (config.dp_noise, 0.0)
    steps = sum(entry[2] for entry in history)
    epsilon = dp_sgd_epsilon(noise, sample_rate, steps, config.dp_delta) if steps else 0.0
    return {
        "dp_sgd": True,
        "dp_clip": config.dp_clip,
        "dp_noise": config.dp_noise,
        "sample_rate": sample_rate,
        "steps": steps,
        "epsilon": epsilon,
        "delta": config.dp_delta,
        "accountant": ACCOUNTANT,
        "history": [[float(n), float(q), int(s)] for n, q, s in history],
        "batchnorm": "frozen",
    }
