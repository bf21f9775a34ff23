"""Does FL-RA's fused attention learn? alpha and the attention's share after a fine-tune.

From one FL-RA base (ResNet weights pretrained on the other MedMNIST sets, attention
new), fine-tune on the first images of a MedMNIST set and print, per block, alpha
and the ratio ||alpha * attention(x)|| / ||beta * conv(x)|| on validation images,
and the test accuracy. Two starting points of the same base are compared:

* ``gate``: the earlier initialisation, attention gated by alpha = 0 (random proj);
* ``silent``: the current one, the attention's output projection at zero, alpha = 1.

Both compute the plain ResNet at the start.

    python benchmarks/flra_attention.py --steps 200 --images 940
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Subset

from medvec.data import load_medmnist
from medvec.data.transforms import eval_transform
from medvec.evaluation import evaluate_model
from medvec.models import load_model_file
from medvec.models.flra import FLRABasicBlock, FLRABottleneck
from medvec.pretrain import PretrainConfig
from medvec.simulation import SweepConfig
from medvec.simulation.sweep import sweep_base
from medvec.training import TrainConfig, fine_tune


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="pneumoniamnist")
    parser.add_argument("--arch", default="flra_resnet18")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--images", type=int, default=940, help="training images used")
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--stem", default="imagenet")
    parser.add_argument("--pretrain-steps", type=int, default=500)
    parser.add_argument("--starts", default="gate,silent")
    parser.add_argument("--datasets-dir", type=Path, default=None)
    parser.add_argument("--cache-dir", type=Path, default=Path("flra-output/cache"))
    return parser.parse_args()


def _blocks(model: nn.Module) -> list[FLRABasicBlock | FLRABottleneck]:
    return [m for m in model.modules() if isinstance(m, FLRABasicBlock | FLRABottleneck)]


@torch.no_grad()
def attention_share(model: nn.Module, images: torch.Tensor) -> list[float]:
    """Per block, ||alpha * attention(x)|| / ||beta * conv(x)|| on ``images``."""
    norms: dict[tuple[str, int], float] = {}
    hooks = []
    for i, block in enumerate(_blocks(model)):
        conv = block.conv2 if hasattr(block, "conv3") else block.conv1

        def keep(kind: str, index: int) -> Callable[..., None]:
            return lambda _m, _i, out: norms.__setitem__((kind, index), float(out.norm()))

        hooks += [
            conv.register_forward_hook(keep("conv", i)),
            block.attn.register_forward_hook(keep("attn", i)),
        ]
    model.eval()
    model(images)
    for hook in hooks:
        hook.remove()
    return [
        abs(float(b.alpha)) * norms[("attn", i)] / (abs(float(b.beta)) * norms[("conv", i)])
        for i, b in enumerate(_blocks(model))
    ]


@torch.no_grad()
def gate_by_alpha(model: nn.Module) -> None:
    """The earlier initialisation: alpha = 0, a random (Kaiming) output projection."""
    for block in _blocks(model):
        proj = block.attn.get_submodule("proj")
        assert isinstance(proj, nn.Conv2d)
        nn.init.kaiming_uniform_(proj.weight, a=5**0.5)  # Conv2d's default
        block.alpha.zero_()


def main() -> None:
    args = parse_args()
    sweep = SweepConfig(
        datasets=(args.dataset,),
        archs=(args.arch,),
        stem=args.stem,
        pretrain=PretrainConfig(steps=args.pretrain_steps),
    )
    train = load_medmnist(args.dataset, "train", args.datasets_dir, in_channels=3)
    val = load_medmnist(args.dataset, "val", args.datasets_dir, in_channels=3)
    test = load_medmnist(args.dataset, "test", args.datasets_dir, in_channels=3)
    base = sweep_base(sweep, args.dataset, args.arch, train.num_classes, args.cache_dir)
    images = eval_transform(val.pixels[:256], 3)
    subset = Subset(train, list(range(min(args.images, len(train)))))
    for start in args.starts.split(","):
        torch.manual_seed(0)
        model, _ = load_model_file(base)
        if start == "gate":
            gate_by_alpha(model)
        started = time.perf_counter()
        config = TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr)
        fine_tune(model, subset, config, device="cpu")
        share = attention_share(model, images)
        alphas = [float(b.alpha) for b in _blocks(model)]
        accuracy = evaluate_model(model, test).accuracy
        print(
            f"{start}: {args.steps} steps, test accuracy {accuracy:.3f}, "
            f"{time.perf_counter() - started:.0f} s\n"
            f"  alpha      {' '.join(f'{a:+.3f}' for a in alphas)}\n"
            f"  attn/conv  {' '.join(f'{r:.3f}' for r in share)}",
            flush=True,
        )


if __name__ == "__main__":
    main()
