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
are off under DP-SGD (per-sample gradients are computed in float32).

**Secret randomness, not seeded.** The guarantee rests on two secrets: which samples
each step takes (the accountant's sample rate amplifies privacy only while the batches
are unknown) and the Gaussian noise. Both come from the operating system's CSPRNG
(``medvec.privacy.poisson_subsample`` and ``gaussian_noised``), never from
``config.seed``, which the vector records: from it anyone could redraw the noise and
subtract it. Opacus's own secure mode needs the ``torchcsprng`` package, so its
``PrivacyEngine`` is not used; the model is wrapped in Opacus's ``GradSampleModule``,
``SecureNoiseDPOptimizer`` is its ``DPOptimizer`` with the CSPRNG's noise, and its RDP
accountant counts the steps. The seed still fixes augmentation, which the guarantee
does not need to be secret. Two runs with one seed therefore differ.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from opacus import GradSampleModule
from opacus.accountants import RDPAccountant
from opacus.optimizers import DPOptimizer
from opacus.optimizers.optimizer import _check_processed_flag, _mark_as_processed
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from medvec.data.arrays import in_memory_arrays
from medvec.data.transforms import train_transform
from medvec.errors import DatasetError, PrivacyError
from medvec.privacy import dp_sgd_epsilon, gaussian_noised, poisson_subsample
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

__all__ = ["SecureNoiseDPOptimizer", "fine_tune_dp", "freeze_batchnorm"]

ACCOUNTANT = "rdp"


class SecureNoiseDPOptimizer(DPOptimizer):  # type: ignore[misc]
    """Opacus's ``DPOptimizer`` whose noise (std ``noise_multiplier * max_grad_norm`` on
    the summed clipped gradients) comes from the OS CSPRNG instead of torch's generator.
    The processed-flag checks are Opacus's own: they refuse noising a sum twice."""

    def add_noise(self) -> None:
        std = self.noise_multiplier * self.max_grad_norm
        for param in self.params:
            _check_processed_flag(param.summed_grad)
            param.grad = gaussian_noised(param.summed_grad, std).view_as(param)
            _mark_as_processed(param.summed_grad)


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


def _poisson_batches(
    pixels: Tensor, labels: Tensor, sample_rate: float, steps: int
) -> Iterator[tuple[Tensor, Tensor]]:
    """``steps`` batches, each sample in each with probability ``sample_rate`` (secretly:
    ``poisson_subsample``); a batch may be empty, and its step still counts."""
    for _ in range(steps):
        chosen = poisson_subsample(len(labels), sample_rate)
        yield pixels[chosen], labels[chosen]


def fine_tune_dp(
    model: nn.Module,
    dataset: Any,
    config: TrainConfig,
    *,
    device: torch.device,
    on_step: StepFn | None = None,
) -> TrainResult:
    """DP-SGD version of ``medvec.training.fine_tune`` (same contract).

    Poisson sampling at rate ``1 / ceil(N / batch_size)`` for ``ceil(N / batch_size)``
    steps an epoch, as Opacus's ``DPDataLoader`` samples; the optimiser's mean is over
    the expected batch size ``int(N * rate)``.
    """
    assert config.dp_clip is not None and config.dp_noise is not None
    torch.manual_seed(config.seed)  # augmentation only: sampling and noise are the OS's
    pixels, labels = in_memory_arrays(dataset, "DP-SGD")
    if labels.numel() == 0:
        raise DatasetError("cannot train on an empty dataset")
    steps_per_epoch = math.ceil(len(labels) / config.batch_size)
    sample_rate = 1 / steps_per_epoch
    model.to(device)
    channels = model_in_channels(model)
    frozen = freeze_batchnorm(model)
    _check_supported(model)
    dp_model, dp_optimizer, accountant = _private_training(model, config, len(labels), sample_rate)
    generator = torch.Generator(device=device).manual_seed(config.seed)
    total = steps_per_epoch * config.epochs
    scheduler = make_scheduler(dp_optimizer, total, config)
    step, seen, loss_value, acc_value = 0, 0, float("nan"), float("nan")
    started = time.perf_counter()
    try:
        for _ in range(config.epochs):
            dp_model.train()
            freeze_batchnorm(model)
            running = RunningStats(device)
            for batch, targets in _poisson_batches(pixels, labels, sample_rate, steps_per_epoch):
                batch, targets = batch.to(device), targets.to(device)
                images = train_transform(
                    batch, channels, augment=config.augment, generator=generator
                )
                logits, loss = _private_step(dp_model, dp_optimizer, images, targets, config)
                scheduler.step()
                if len(targets):
                    running.add(loss, logits, targets)
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
        privacy=_privacy_record(accountant, sample_rate, config),
    )  # fmt: skip


def _private_training(
    model: nn.Module, config: TrainConfig, samples: int, sample_rate: float
) -> tuple[GradSampleModule, SecureNoiseDPOptimizer, RDPAccountant]:
    """``model`` wrapped for per-sample gradients, its clipping and noising optimiser, and
    the accountant that counts every step it takes."""
    assert config.dp_clip is not None and config.dp_noise is not None
    optimizer = make_optimizer([p for p in model.parameters() if p.requires_grad], config)
    dp_model = GradSampleModule(model, batch_first=True, loss_reduction="mean")
    dp_model.forbid_grad_accumulation()
    dp_optimizer = SecureNoiseDPOptimizer(
        optimizer,
        noise_multiplier=config.dp_noise,
        max_grad_norm=config.dp_clip,
        expected_batch_size=int(samples * sample_rate),
        loss_reduction="mean",
    )
    accountant = RDPAccountant()
    dp_optimizer.attach_step_hook(accountant.get_optimizer_hook_fn(sample_rate=sample_rate))
    return dp_model, dp_optimizer, accountant


def _private_step(
    dp_model: GradSampleModule,
    dp_optimizer: SecureNoiseDPOptimizer,
    images: Tensor,
    targets: Tensor,
    config: TrainConfig,
) -> tuple[Tensor, Tensor]:
    """One DP-SGD step on a Poisson batch; its logits and loss."""
    logits = dp_model(images)
    # an empty Poisson batch still takes a (noise-only) step, as accounted
    loss = (
        F.cross_entropy(logits, targets, label_smoothing=config.label_smoothing)
        if len(targets)
        else logits.sum() * 0
    )
    dp_optimizer.zero_grad(set_to_none=True)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        loss.backward()
    dp_optimizer.step()
    return logits, loss


def _privacy_record(
    accountant: RDPAccountant, sample_rate: float, config: TrainConfig
) -> dict[str, Any]:
    """What the accountant saw, and the epsilon it gives at ``dp_delta``."""
    assert config.dp_noise is not None
    history = list(accountant.history)
    steps = sum(entry[2] for entry in history)
    epsilon = dp_sgd_epsilon(config.dp_noise, sample_rate, steps, config.dp_delta)
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
