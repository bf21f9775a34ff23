"""Local fine-tuning: one lean loop for every model, on CUDA or the CPU.

``fine_tune`` trains a model in place on a dataset and reports what it did. Data
that live in memory (``ImageArrayDataset`` or ``Subset``s of one) are moved to the
device once as uint8 and batched by index, so a step costs one gather, one
conversion to float and the model itself: no per-item Python, no worker
processes. On CUDA the loop uses mixed precision (``torch.autocast`` with float16
and a ``GradScaler``) and channels-last memory when the config allows; on the
CPU it runs in float32 and, seeded, is deterministic. Loss and accuracy are
accumulated on the device and read back only every few steps for progress.

With ``dp_sgd`` the loop runs under Opacus (``medvec.training_dp``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from pydantic import BaseModel, Field
from torch import Tensor, nn
from torch.utils.data import DataLoader

from medvec.data.arrays import batch_arrays
from medvec.data.transforms import match_channels, train_transform
from medvec.errors import DatasetError, MedVecError, PrivacyError
from medvec.training_config import TrainConfig

__all__ = [
    "RunningStats",
    "StepFn",
    "TrainConfig",
    "TrainResult",
    "fine_tune",
    "lr_factor",
    "make_optimizer",
    "make_scheduler",
    "planned_steps",
    "model_in_channels",
    "resolve_device",
]

StepFn = Callable[..., None]
PROGRESS_EVERY = 10


class TrainResult(BaseModel):
    """What a fine-tuning run did; ``loss``/``accuracy`` are over its last epoch."""

    loss: float
    accuracy: float
    epochs: int
    steps: int
    samples: int
    seconds: float
    images_per_second: float
    device: str
    amp: bool
    privacy: dict[str, Any] = Field(default_factory=dict)

    @property
    def epsilon(self) -> float | None:
        return self.privacy.get("epsilon")

    @property
    def delta(self) -> float | None:
        return self.privacy.get("delta")


def resolve_device(name: str | torch.device | None = None) -> torch.device:
    """``name`` as a device (``"cuda"`` refused when absent); by default CUDA when present."""
    if name is None or str(name) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise MedVecError(
            f"device {name!r} asked for but CUDA is not available",
            hint="use --device cpu, or leave the device out to pick one automatically",
        )
    return device


def model_in_channels(model: nn.Module) -> int | None:
    """Input channels of the model's first convolution (``None`` when it has none)."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            return int(module.in_channels)
    return None


class _Batches:
    """Shuffled batches of (uint8 pixels, labels) gathered on the device by index."""

    def __init__(
        self, dataset: Any, config: TrainConfig, device: torch.device, channels: int | None
    ) -> None:
        self.config = config
        self.device = device
        self.channels = channels
        # shuffling and augmentation draw on the device: no per-step host-device copies
        self.generator = torch.Generator(device=device).manual_seed(config.seed)
        arrays = batch_arrays(dataset)
        self.loader: DataLoader[Any] | None = None
        if arrays is not None:
            base, indices = arrays
            self.pixels = base.pixels[indices].to(device)
            self.labels = base.labels[indices].to(device)
            self.size = int(indices.numel())
        else:
            self.loader = DataLoader(
                dataset,
                batch_size=config.batch_size,
                shuffle=True,
                generator=torch.Generator().manual_seed(config.seed),
                num_workers=config.num_workers,
                pin_memory=device.type == "cuda",
            )
            self.size = len(dataset)
        if self.size == 0:
            raise DatasetError("cannot train on an empty dataset")

    def __len__(self) -> int:
        full, rest = divmod(self.size, self.config.batch_size)
        return full + (1 if rest > 1 or (rest == 1 and full == 0) else 0)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        if self.loader is not None:
            for images, labels in self.loader:
                if len(labels) == 1 and self.size > 1:
                    continue
                images = images.to(self.device, non_blocking=True)
                if self.channels is not None:
                    images = match_channels(images, self.channels)
                yield images, labels.reshape(-1).to(self.device, non_blocking=True)
            return
        order = torch.randperm(self.size, generator=self.generator, device=self.device)
        for start in range(0, self.size, self.config.batch_size):
            index = order[start : start + self.config.batch_size]
            if index.numel() == 1 and self.size > 1:
                continue  # a lone trailing sample breaks BatchNorm and adds nothing
            images = train_transform(
                self.pixels[index],
                self.channels,
                augment=self.config.augment,
                generator=self.generator,
            )
            yield images, self.labels[index]


def make_optimizer(params: Iterator[nn.Parameter] | list[nn.Parameter], config: TrainConfig) -> Any:
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            params,
            lr=config.lr,
            momentum=config.momentum,
            nesterov=config.nesterov and config.momentum > 0,
            weight_decay=config.weight_decay,
        )
    kind = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    return kind(params, lr=config.lr, weight_decay=config.weight_decay)


def lr_factor(step: int, total: int, config: TrainConfig) -> float:
    """Multiplier of ``config.lr`` at optimiser step ``step`` (0-based) of ``total``.

    Linear warm-up over the first ``warmup`` fraction of the steps, then a cosine
    decay to zero at the last step (or a constant rate with ``schedule="constant"``).
    """
    warm = math.ceil(round(config.warmup * total, 9))  # 0.07 * 100 is 7.000000000000001
    if step < warm:
        return (step + 1) / (warm + 1)
    if config.schedule == "constant":
        return 1.0
    span = max(1, total - warm)
    return 0.5 * (1.0 + math.cos(math.pi * min(step - warm, span) / span))


def make_scheduler(optimizer: Any, total: int, config: TrainConfig) -> Any:
    """``LambdaLR`` stepping ``lr_factor`` once per optimiser step."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, total, config))


def planned_steps(batches_per_epoch: int, config: TrainConfig) -> tuple[int, int]:
    """``(epochs, steps)`` a run makes: ``steps`` when set (as many passes as it takes)."""
    if config.steps is None:
        return config.epochs, batches_per_epoch * config.epochs
    return math.ceil(config.steps / max(1, batches_per_epoch)), config.steps


class RunningStats:
    """Loss and accuracy summed on the device; read back only when asked."""

    def __init__(self, device: torch.device) -> None:
        self.loss = torch.zeros((), device=device)
        self.correct = torch.zeros((), device=device, dtype=torch.long)
        self.count = 0

    def add(self, loss: Tensor, logits: Tensor, labels: Tensor) -> None:
        n = labels.shape[0]
        self.loss += loss.detach().float() * n
        self.correct += (logits.detach().argmax(1) == labels).sum()
        self.count += n

    def read(self) -> tuple[float, float]:
        if self.count == 0:
            return float("nan"), float("nan")
        return float(self.loss) / self.count, float(self.correct) / self.count


def fine_tune(
    model: nn.Module,
    dataset: Any,
    config: TrainConfig,
    *,
    device: str | torch.device,
    on_step: StepFn | None = None,
) -> TrainResult:
    """Train ``model`` in place on ``dataset`` (items ``(image, label)``); returns a summary.

    ``on_step(step, total, loss=..., acc=...)`` is called after every optimiser step
    with the running loss and accuracy of the current epoch (refreshed every
    few steps). The model is left on ``device`` in eval mode.
    """
    device = resolve_device(device)
    if config.dp_sgd:
        try:
            from medvec.training_dp import fine_tune_dp
        except ImportError as exc:  # Opacus comes with the client extra
            raise PrivacyError("DP-SGD needs Opacus", hint="pip install 'medvec[client]'") from exc
        return fine_tune_dp(model, dataset, config, device=device, on_step=on_step)
    if config.dp_clip is not None or config.dp_noise is not None:
        raise PrivacyError(
            "dp_clip/dp_noise in a TrainConfig apply to DP-SGD only",
            hint="set dp_sgd=True, or clip and noise the vector with medvec.privacy",
        )
    torch.manual_seed(config.seed)
    cuda = device.type == "cuda"
    amp = cuda and config.amp
    memory_format = torch.channels_last if cuda and config.channels_last else None
    model.to(device)
    if memory_format is not None:
        model.to(memory_format=memory_format)
    batches = _Batches(dataset, config, device, model_in_channels(model))
    optimizer = make_optimizer([p for p in model.parameters() if p.requires_grad], config)
    epochs, total = planned_steps(len(batches), config)
    scheduler = make_scheduler(optimizer, total, config)
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    step, seen, loss_value, acc_value = 0, 0, float("nan"), float("nan")
    started = time.perf_counter()
    for _ in range(epochs):
        model.train()
        running = RunningStats(device)
        for images, labels in batches:
            if step == total:
                break
            if memory_format is not None:
                images = images.contiguous(memory_format=memory_format)
            with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
                logits = model(images)
                loss = F.cross_entropy(logits, labels, label_smoothing=config.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            running.add(loss, logits, labels)
            step += 1
            if on_step is not None:
                if step % PROGRESS_EVERY == 0 or step == total:
                    loss_value, acc_value = running.read()
                on_step(step, total, loss=loss_value, acc=acc_value)
        loss_value, acc_value = running.read()
        seen += running.count
    return finish_run(
        model, device, started, config, steps=step, samples=seen,
        loss=loss_value, accuracy=acc_value, amp=amp, epochs=epochs,
    )  # fmt: skip


def finish_run(
    model: nn.Module,
    device: torch.device,
    started: float,
    config: TrainConfig,
    *,
    steps: int,
    samples: int,
    loss: float,
    accuracy: float,
    amp: bool,
    epochs: int | None = None,
    privacy: dict[str, Any] | None = None,
) -> TrainResult:
    """Wait for the device, leave the model in eval mode, and report the run."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - started
    model.eval()
    return TrainResult(
        loss=loss,
        accuracy=accuracy,
        epochs=config.epochs if epochs is None else epochs,
        steps=steps,
        samples=samples,
        seconds=seconds,
        images_per_second=samples / seconds if seconds > 0 else 0.0,
        device=str(device),
        amp=amp,
        privacy=privacy or {},
    )
