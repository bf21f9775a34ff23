"""FL-RA: ResNet blocks whose 3x3 convolution is fused with multi-head self-attention.

Each block's strided 3x3 convolution (``conv2`` of a ``Bottleneck``, ``conv1`` of a
``BasicBlock``) is replaced in the forward pass by::

    beta * conv3x3(x) + alpha * attention(x)

with learnable scalars ``alpha`` and ``beta`` (both init 1). The blocks subclass
torchvision's, so every ResNet key keeps its name and the FL-RA keys are new
(``*.attn.{q,k,v,proj}.weight``, ``*.alpha``, ``*.beta``).

The attention's output projection ``proj`` starts at zero, so a new block computes
exactly what the plain ResNet block computes, which is how a pretrained ResNet
checkpoint becomes a valid FL-RA starting point, while the first backward pass
already reaches ``proj`` at full strength (alpha, q, k, v from the second step on).
Gating the attention by ``alpha = 0`` instead, as earlier versions did, also starts
from the plain block, but scales every attention gradient by ``|alpha|``: measured
on PneumoniaMNIST (docs/results.md, "FL-RA"), alpha stayed within 0.05 after 200
fine-tuning steps and the attention added 0.1-4% to the convolution's output. A
model file saved with the old initialisation loads and trains as before.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

from medvec.errors import ModelError
from medvec.models.attention import AttentionFactory, MultiHeadSelfAttention2d
from medvec.models.registry import register_model
from medvec.models.resnet import Stem, build_resnet

__all__ = [
    "BlockWithArgs",
    "FLRABasicBlock",
    "FLRABottleneck",
    "build_flra_resnet",
    "flra_resnet18",
    "flra_resnet50",
    "silence_attention",
]


def _fusion(attn: nn.Module) -> tuple[nn.Parameter, nn.Parameter]:
    """``alpha`` and ``beta`` of a new block whose attention is ``attn`` (silenced)."""
    alpha, beta = nn.Parameter(torch.ones(())), nn.Parameter(torch.ones(()))
    _silence(attn, alpha, beta)
    return alpha, beta


@torch.no_grad()
def _silence(attn: nn.Module, alpha: Tensor, beta: Tensor) -> None:
    """Make the block the plain ResNet block while keeping the attention trainable.

    An attention with a 1x1 output projection ``proj`` (``MultiHeadSelfAttention2d``)
    gets that projection zeroed and ``alpha = 1``; any other attention is gated by
    ``alpha = 0``. ``beta = 1``.
    """
    proj = getattr(attn, "proj", None)
    beta.fill_(1.0)
    if isinstance(proj, nn.Conv2d):
        proj.weight.zero_()
        alpha.fill_(1.0)
    else:
        alpha.zero_()


def silence_attention(block: nn.Module) -> None:
    """Reset an FL-RA block's fusion so that it computes the plain ResNet block exactly
    (used when a plain ResNet checkpoint is loaded into an FL-RA model)."""
    _silence(block.get_submodule("attn"), block.get_parameter("alpha"), block.get_parameter("beta"))


def _check_dilation(dilation: int) -> None:
    if dilation != 1:
        raise ModelError(
            f"FL-RA blocks do not support dilation ({dilation})",
            hint="build FL-RA models without replace_stride_with_dilation",
        )


class FLRABottleneck(Bottleneck):  # type: ignore[misc]  # torchvision ships no types
    """torchvision ``Bottleneck`` with attention fused into its 3x3 ``conv2``."""

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        groups: int = 1,
        base_width: int = 64,
        dilation: int = 1,
        norm_layer: Callable[..., nn.Module] | None = None,
        *,
        attn_layer: AttentionFactory = MultiHeadSelfAttention2d,
    ) -> None:
        super().__init__(
            inplanes, planes, stride, downsample, groups, base_width, dilation, norm_layer
        )
        _check_dilation(dilation)
        width = self.conv2.in_channels
        self.attn = attn_layer(width, width, stride)
        self.alpha, self.beta = _fusion(self.attn)

    def forward(self, x: Tensor) -> Tensor:
        identity = x
        out: Tensor = self.relu(self.bn1(self.conv1(x)))
        out = self.beta * self.conv2(out) + self.alpha * self.attn(out)
        out = self.relu(self.bn2(out))
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        out = self.relu(out)
        return out


class FLRABasicBlock(BasicBlock):  # type: ignore[misc]  # torchvision ships no types
    """torchvision ``BasicBlock`` with attention fused into its strided 3x3 ``conv1``."""

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
        groups: int = 1,
        base_width: int = 64,
        dilation: int = 1,
        norm_layer: Callable[..., nn.Module] | None = None,
        *,
        attn_layer: AttentionFactory = MultiHeadSelfAttention2d,
    ) -> None:
        super().__init__(
            inplanes, planes, stride, downsample, groups, base_width, dilation, norm_layer
        )
        self.attn = attn_layer(inplanes, planes, stride)
        self.alpha, self.beta = _fusion(self.attn)

    def forward(self, x: Tensor) -> Tensor:
        identity = x
        out: Tensor = self.beta * self.conv1(x) + self.alpha * self.attn(x)
        out = self.relu(self.bn1(out))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        out = self.relu(out)
        return out


class BlockWithArgs:
    """A block class with extra keyword arguments bound, usable as torchvision's ``block``.

    torchvision's ``ResNet`` calls ``block(...)`` positionally and reads ``block.expansion``;
    this is timm's ``block_args`` idea for a ResNet class that has no such parameter.
    """

    def __init__(self, block: type[BasicBlock] | type[Bottleneck], **block_args: Any) -> None:
        self.block = block
        self.block_args = block_args
        self.expansion = block.expansion

    def __call__(self, *args: Any, **kwargs: Any) -> nn.Module:
        block: nn.Module = self.block(*args, **self.block_args, **kwargs)
        return block


_LAYOUTS: dict[int, tuple[type[BasicBlock] | type[Bottleneck], list[int]]] = {
    18: (FLRABasicBlock, [2, 2, 2, 2]),
    50: (FLRABottleneck, [3, 4, 6, 3]),
}


def build_flra_resnet(
    depth: Literal[18, 50],
    *,
    num_classes: int,
    in_channels: int = 3,
    image_size: int = 28,
    stem: Stem = "auto",
    heads: int = 4,
    kv_stride: int = 2,
) -> ResNet:
    """FL-RA ResNet of ``depth`` with non-default attention settings.

    Model files record only the ``ModelSpec``, which rebuilds with the defaults
    (4 heads, kv_stride 2); register a new name for other settings that must
    travel with the weights.
    """
    if depth not in _LAYOUTS:
        raise ModelError(f"no FL-RA ResNet of depth {depth}", hint="use depth 18 or 50")
    block_cls, layers = _LAYOUTS[depth]
    attn = partial(MultiHeadSelfAttention2d, heads=heads, kv_stride=kv_stride)
    model = build_resnet(
        BlockWithArgs(block_cls, attn_layer=attn),
        layers,
        num_classes=num_classes,
        in_channels=in_channels,
        image_size=image_size,
        stem=stem,
        # as plain ResNet-50 (medvec.models.resnet): bottlenecks do not train at the
        # recipe's learning rate from torchvision's default initialisation
        zero_init_residual=block_cls is FLRABottleneck,
    )
    # torchvision's ResNet re-initialises every Conv2d after building the blocks,
    # the attention's zeroed output projection included: silence it again.
    for module in model.modules():
        if isinstance(module, FLRABasicBlock | FLRABottleneck):
            silence_attention(module)
    return model


@register_model()
def flra_resnet18(
    *, num_classes: int, in_channels: int = 3, image_size: int = 28, stem: Stem = "auto"
) -> ResNet:
    """ResNet-18 with attention fused into each block's first 3x3 conv (4 heads)."""
    return build_flra_resnet(
        18, num_classes=num_classes, in_channels=in_channels, image_size=image_size, stem=stem
    )


@register_model()
def flra_resnet50(
    *, num_classes: int, in_channels: int = 3, image_size: int = 28, stem: Stem = "auto"
) -> ResNet:
    """ResNet-50 with attention fused into each bottleneck's 3x3 conv (4 heads)."""
    return build_flra_resnet(
        50, num_classes=num_classes, in_channels=in_channels, image_size=image_size, stem=stem
    )
