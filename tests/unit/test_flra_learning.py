"""Does FL-RA's fused attention train? Gradient flow from the initial fusion weights."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from medvec.data import load_medmnist
from medvec.data.transforms import eval_transform
from medvec.models import get_model


def _batch(datasets_dir: Path) -> tuple[torch.Tensor, torch.Tensor]:
    data = load_medmnist("pneumoniamnist", "train", datasets_dir, in_channels=3)
    return eval_transform(data.pixels[:16], 3), data.labels[:16].reshape(-1).long()


def _grads(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(images), labels).backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _norm(grads: dict[str, torch.Tensor], part: str) -> float:
    return float(sum(g.square().sum() for n, g in grads.items() if part in n) ** 0.5)


def test_attention_learns_from_the_first_step(datasets_dir: Path) -> None:
    """The first backward pass reaches the attention's output projection; alpha and the
    query, key and value weights follow from the second step on. (With attention
    gated by alpha = 0, as before, every attention weight had exactly zero gradient at
    first and a gradient scaled by |alpha| ~ 0.01 after hundreds of steps.)"""
    torch.manual_seed(0)
    model = get_model("flra_resnet18", num_classes=2, stem="imagenet").train()
    images, labels = _batch(datasets_dir)
    first = _grads(model, images, labels)
    projections = [n for n in first if n.endswith("attn.proj.weight")]
    assert len(projections) == 8 and all(first[n].abs().sum() > 0 for n in projections)
    # the attention's output is still zero: nothing before proj, nor alpha, moves yet
    silent = [n for n in first if n.endswith((".alpha", "attn.q.weight"))]
    assert len(silent) == 16 and all(first[n].abs().sum() == 0 for n in silent)

    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    for _ in range(3):
        _grads(model, images, labels)
        optimizer.step()
    later = _grads(model, images, labels)
    for suffix in ("attn.q.weight", "attn.k.weight", "attn.v.weight", ".alpha"):
        names = [n for n in later if n.endswith(suffix)]
        assert len(names) == 8 and all(later[n].abs().sum() > 0 for n in names)
    # the attention's output projection learns at the scale of the convolutions
    assert _norm(later, "attn.proj") > 0.1 * _norm(later, "conv")
