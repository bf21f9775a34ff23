"""Training throughput: `medvec train`'s path against a plain PyTorch loop; FL-RA overhead.

Three ways to train the same model (same initial weights, data, batch size, epochs and
recipe: ``TrainConfig``'s optimizer, learning-rate schedule, augmentation and label
smoothing) on real MedMNIST images, timed from an in-memory dataset to a trained model:

* ``plain``      — a hand-written PyTorch loop over pre-normalised float tensors on the
  device, batched by index (the leanest loop a PyTorch user would write), doing the
  recipe's work: the same torch optimizer and ``LambdaLR`` warm-up + cosine stepped
  every batch, the same batched flips and crops (``augment_batch``), label smoothing;
* ``fine_tune``  — ``medvec.training.fine_tune``, the loop `medvec train` runs;
* ``medvec train`` — ``hospital_cli.local.train_vector``, the whole command path from the
  base file and the ``.npz`` to the saved data vector (loading, training, vector, save).

Then the FL-RA overhead: ``flra_resnet18`` against ``resnet18`` at the same input size,
both through ``fine_tune`` (the plain loop and the command run for the first
architecture only). On CUDA both loops use mixed precision (float16 autocast +
GradScaler) and channels-last memory, as `medvec train` does (``--no-amp`` and
``--no-channels-last`` switch them off for both). Each measurement is repeated
(interleaved, in alternating order) and the best run is kept, since other processes
share the machine.

    python benchmarks/train.py                          # CPU default: a few minutes on 2 cores
    python benchmarks/train.py --threads 1 --clock cpu  # a CPU other jobs share
    python benchmarks/train.py --samples 20000 --epochs 2 --repeats 3   # on a GPU
"""

from __future__ import annotations

import argparse
import copy
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn
from torch.utils.data import Subset

from hospital_cli.local import TrainRequest, train_vector
from medvec.data import ImageArrayDataset, load_dataset, resolve_datasets_dir
from medvec.data.transforms import augment_batch
from medvec.hashing import sha256_file
from medvec.models import ModelSpec, build_model, save_model_file
from medvec.training import (
    TrainConfig,
    fine_tune,
    make_optimizer,
    make_scheduler,
    resolve_device,
)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def plain_loop(
    model: nn.Module,
    dataset: ImageArrayDataset,
    count: int,
    config: TrainConfig,
    device: torch.device,
) -> int:
    """The reference: a textbook loop, data normalised once and kept on the device.

    It does the work of ``config``'s recipe (the optimizer and scheduler objects
    ``fine_tune`` builds, the same batched augmentation, label smoothing), so that the
    ratio against ``fine_tune`` measures the loop around them, not a different recipe.
    """
    cuda = device.type == "cuda"
    amp = cuda and config.amp
    memory_format = torch.channels_last if cuda and config.channels_last else None
    torch.manual_seed(config.seed)
    model.to(device)
    if memory_format is not None:
        model.to(memory_format=memory_format)
    images, labels = dataset.batch(torch.arange(count))
    images, labels = images.contiguous().to(device), labels.to(device)
    optimizer = make_optimizer(model.parameters(), config)
    full, rest = divmod(count, config.batch_size)
    scheduler = make_scheduler(optimizer, config.epochs * (full + (rest > 1)), config)
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    generator = torch.Generator().manual_seed(config.seed)
    augment_rng = torch.Generator(device=device).manual_seed(config.seed)
    seen = 0
    for _ in range(config.epochs):
        model.train()
        order = torch.randperm(len(labels), generator=generator).to(device)
        for start in range(0, len(labels), config.batch_size):
            index = order[start : start + config.batch_size]
            if index.numel() < 2:
                continue
            batch = images[index]
            if config.augment:
                batch = augment_batch(batch, augment_rng)
            if memory_format is not None:
                batch = batch.contiguous(memory_format=memory_format)
            with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
                loss = F.cross_entropy(
                    model(batch), labels[index], label_smoothing=config.label_smoothing
                )
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            seen += int(index.numel())
    _sync(device)
    return seen


def timed(run: Callable[[], int], device: torch.device, clock: str = "wall") -> float:
    """Images per second of one call that returns the number of images it trained on.

    ``clock="cpu"`` counts this process's CPU seconds instead of wall seconds: on a CPU
    shared with other jobs, waiting for a core then does not count (use one thread, so
    that no intra-op worker spins while it waits).
    """
    now = time.process_time if clock == "cpu" else time.perf_counter
    _sync(device)
    started = now()
    images = run()
    _sync(device)
    return images / (now() - started)


class Bench:
    """Fresh copies of one initial model per run, so every loop starts from the same weights."""

    def __init__(self, args: argparse.Namespace, device: torch.device) -> None:
        self.args = args
        self.device = device
        self.data_path = resolve_datasets_dir(args.datasets_dir) / f"{args.dataset}.npz"
        full = load_dataset(self.data_path, "train", in_channels=3, image_size=args.image_size)
        self.full = full
        self.dataset = Subset(full, range(min(args.samples, len(full))))
        self.num_classes = full.num_classes
        given = {"lr": args.lr, "optimizer": args.optimizer}
        recipe = {k: v for k, v in given.items() if v is not None}
        self.config = TrainConfig(
            epochs=args.epochs,
            batch_size=args.batch_size,
            amp=args.amp,
            channels_last=args.channels_last,
            **recipe,
        )
        self.models = {arch: self._initial(arch) for arch in args.archs}

    def _initial(self, arch: str) -> nn.Module:
        torch.manual_seed(0)
        spec = self.spec(arch)
        return build_model(spec)

    def spec(self, arch: str) -> ModelSpec:
        return ModelSpec(
            arch=arch, num_classes=self.num_classes, in_channels=3, image_size=self.args.image_size
        )

    def fresh(self, arch: str) -> nn.Module:
        return copy.deepcopy(self.models[arch])

    def plain(self, arch: str) -> float:
        model = self.fresh(arch)
        n = len(self.dataset)
        return timed(
            lambda: plain_loop(model, self.full, n, self.config, self.device),
            self.device,
            self.args.clock,
        )

    def fine_tune(self, arch: str) -> float:
        model = self.fresh(arch)
        return timed(
            lambda: fine_tune(model, self.dataset, self.config, device=self.device).samples,
            self.device,
            self.args.clock,
        )

    def command(self, arch: str, workdir: Path) -> float:
        """The whole `medvec train` path: base file and .npz in, data vector out."""
        base = workdir / f"{arch}-base.safetensors"
        if not base.exists():
            save_model_file(base, self.models[arch], self.spec(arch))
        sha = sha256_file(base)
        request = TrainRequest(
            base=base,
            base_record={"id": sha, "sha256": sha, "name": arch},
            data=self.data_path,
            out=workdir / f"{arch}-vector.safetensors",
            hospital="benchmark",
            recipe=self.config,
            val_fraction=0.0,
            device=str(self.device),
            max_samples=self.args.samples,
        )
        return timed(
            lambda: train_vector(request).metadata["num_samples"] * self.args.epochs,
            self.device,
            self.args.clock,
        )

    def warm_up(self, arch: str) -> None:
        small = Subset(self.dataset, range(min(len(self.dataset), 4 * self.args.batch_size)))
        config = self.config.model_copy(update={"epochs": 1})
        fine_tune(self.fresh(arch), small, config, device=self.device)


def _recipe(config: TrainConfig) -> str:
    return (
        f"{config.optimizer} lr {config.lr} wd {config.weight_decay}, {config.schedule} "
        f"schedule with {config.warmup:.0%} warm-up, augment {config.augment}, "
        f"label smoothing {config.label_smoothing}"
    )


def best_of(runs: list[float]) -> float:
    return max(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="pneumoniamnist", help="MedMNIST name")
    parser.add_argument("--datasets-dir", default=None, help="default: MEDVEC_DATASETS_DIR")
    parser.add_argument("--samples", type=int, default=192, help="training images")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=None, help="default: the recipe's")
    parser.add_argument("--optimizer", default=None, help="sgd, adam, adamw (default: recipe's)")
    parser.add_argument("--image-size", type=int, default=28)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default=None, help="cpu, cuda (default: CUDA when present)")
    parser.add_argument("--archs", default="resnet18,flra_resnet18")
    parser.add_argument("--no-amp", dest="amp", action="store_false")
    parser.add_argument("--no-channels-last", dest="channels_last", action="store_false")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="wall seconds, or this process's CPU seconds (a CPU shared with other jobs)",
    )
    args = parser.parse_args()
    args.archs = [a.strip() for a in args.archs.split(",") if a.strip()]
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    bench = Bench(args, device)
    hardware = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    print(
        f"device {device} ({hardware or platform.machine()}), torch {torch.__version__}, "
        f"{torch.get_num_threads()} CPU threads; {args.dataset} {len(bench.dataset)} images "
        f"{args.image_size}x{args.image_size}, batch {args.batch_size}, {args.epochs} epoch(s), "
        f"{_recipe(bench.config)}, AMP {args.amp and device.type == 'cuda'}, "
        f"channels-last {args.channels_last and device.type == 'cuda'}, best of {args.repeats}, "
        f"{args.clock} clock"
    )
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for arch in args.archs:
            bench.warm_up(arch)
            runs: dict[str, list[float]] = {"plain": [], "fine_tune": [], "medvec train": []}
            first = arch == args.archs[0]
            loops = {
                "plain": lambda a=arch: bench.plain(a),
                "fine_tune": lambda a=arch: bench.fine_tune(a),
                "medvec train": lambda a=arch: bench.command(a, Path(tmp)),
            }
            names = list(loops) if first else ["fine_tune"]
            for repeat in range(args.repeats):
                for name in names if repeat % 2 == 0 else reversed(names):
                    runs[name].append(loops[name]())
            results[arch] = {k: best_of(v) for k, v in runs.items() if v}
    print(f"\n{'arch':<16}{'loop':<14}{'images/s':>10}{'vs plain':>10}")
    for arch, row in results.items():
        for loop, speed in row.items():
            ratio = f"{speed / row['plain']:>10.3f}" if "plain" in row else ""
            print(f"{arch:<16}{loop:<14}{speed:>10.1f}{ratio}")
    if len(args.archs) > 1:
        ref, other = args.archs[0], args.archs[1]
        overhead = results[ref]["fine_tune"] / results[other]["fine_tune"]
        print(f"\n{other} overhead vs {ref} (fine_tune images/s ratio): {overhead:.2f}x slower")


if __name__ == "__main__":
    main()
