"""Reproduce the seed paper's Table 3 with MedVec's in-process simulation.

For every dataset, architecture and number of hospitals N: split the training data
across N hospitals, fine-tune a shared base on each part, merge the data vectors
with weighted mean, task arithmetic (lambda tuned on the validation split), TIES
and the coordinate median, train one centralized model on the union, and report
test accuracy (mean over the local models, each merge, centralized).

CPU defaults (28x28 inputs, ResNet-18 with the ImageNet stem, 2,500 training
images, 3 generations of 3 local epochs, a base pretrained for 500 steps on the
other MedMNIST sets) run on a laptop; ``--gpu`` uses the full training sets, the
MedMNIST stem and a longer-pretrained base. Results go to ``--out`` (summary.csv,
results.json, table.md).

    python benchmarks/reproduce.py --hospitals 5,10 --datasets pneumoniamnist
    python benchmarks/reproduce.py --gpu --archs resnet18,flra_resnet18
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import torch

from medvec.pretrain import PretrainConfig
from medvec.simulation import SimulationConfig, SweepConfig, markdown_table, run_sweep

SEED_DATASETS = ("pneumoniamnist", "organsmnist", "octmnist", "bloodmnist")


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x.strip())


def _strs(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", default=",".join(SEED_DATASETS))
    parser.add_argument("--hospitals", default="5,10,20,50")
    parser.add_argument("--archs", default="resnet18,flra_resnet18")
    parser.add_argument("--alpha", type=float, default=None, help="Dirichlet non-IID split")
    parser.add_argument("--max-train", type=int, default=2500)
    parser.add_argument("--max-val", type=int, default=500, help="validation images (choices)")
    parser.add_argument("--max-test", type=int, default=None)
    parser.add_argument("--generations", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3, help="local epochs per generation")
    parser.add_argument("--steps", type=int, default=None, help="local steps per generation")
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--stem", default="imagenet", help="imagenet (CPU), small (MedMNIST)")
    parser.add_argument("--pretrain-samples", type=int, default=None, help="cap per set")
    parser.add_argument("--pretrain-steps", type=int, default=500)
    parser.add_argument(
        "--gpu", action="store_true", help="full data, small stem, longer pretraining, cuda"
    )
    parser.add_argument("--device", default=None)
    parser.add_argument("--datasets-dir", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=Path("reproduce-output"))
    parser.add_argument("--cache-dir", type=Path, default=None, help="default: OUT/cache")
    parser.add_argument("--image-size", type=int, default=28, help="224: upsampled inputs")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def build_config(args: argparse.Namespace) -> SweepConfig:
    if args.gpu:
        args.max_train, args.batch_size, args.stem = None, 64, "small"
        args.pretrain_steps = max(args.pretrain_steps, 20000)
        args.device = args.device or "cuda"
    point = SimulationConfig(
        partition="iid" if args.alpha is None else "dirichlet",
        alpha=args.alpha or 0.5,
        max_train=args.max_train,
        max_val=args.max_val,
        max_test=args.max_test,
        generations=args.generations,
        epochs=args.epochs,
        steps=args.steps,
        lr=args.lr,
        batch_size=args.batch_size,
        seed=args.seed,
    )
    pretrain = PretrainConfig(
        max_samples=args.pretrain_samples, steps=args.pretrain_steps, seed=args.seed
    )
    return SweepConfig(
        datasets=_strs(args.datasets),
        hospitals=_ints(args.hospitals),
        archs=_strs(args.archs),
        point=point,
        pretrain=pretrain,
        image_size=args.image_size,
        stem=args.stem,
    )


def main() -> None:
    args = parse_args()
    config = build_config(args)
    device = args.device
    hardware = (
        torch.cuda.get_device_name(0)
        if (device or "").startswith("cuda")
        else f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    )
    print(f"hardware: {hardware}; torch {torch.__version__}")
    print(f"settings: {config.point.model_dump_json()}")
    print(f"pretraining: {config.pretrain.model_dump_json()}")
    started = time.perf_counter()

    def on_event(name: str, info: dict[str, object]) -> None:
        if name in ("row", "skipped", "point", "base"):
            print(f"[{time.perf_counter() - started:7.1f}s] {name}: {info}", flush=True)

    outcome = run_sweep(
        config,
        args.out,
        args.cache_dir or args.out / "cache",
        datasets_dir=args.datasets_dir,
        device=device,
        on_event=on_event,
    )
    elapsed = time.perf_counter() - started
    table = markdown_table(outcome.rows)
    skipped = "\n".join(f"- not run: {reason}" for reason in outcome.skipped)
    text = f"{table}\n\n{skipped}\n\nhardware: {hardware}; wall time {elapsed:.0f} s\n"
    (args.out / "table.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
