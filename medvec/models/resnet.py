"""ResNet-18/50 from torchvision's ``ResNet``, with an input-channel and a stem parameter.

The network is torchvision's own class, so state-dict keys are torchvision's and a
torchvision checkpoint loads key for key. Only the stem changes (``stem``):

* ``"small"``: a 3x3 stride-1 conv1 and no max-pool (``maxpool`` becomes
  ``Identity``), so a 28x28 image still gives a 4x4 map at ``layer4`` (MedMNIST v2's
  ResNet-18 (28) layout);
* ``"strided"``: a 3x3 stride-2 conv1 and no max-pool: a 2x2 map at ``layer4`` for
  28x28, a quarter of the small stem's activations (about 4x faster on a CPU);
* ``"imagenet"``: the standard 7x7 stride-2 conv1 and 3x3 stride-2 max-pool
  (total stride 4 before ``layer1``);
* ``"auto"`` (the default): ``"small"`` up to ``SMALL_INPUT_MAX`` pixels, else
  ``"imagenet"``.

The ``"strided"`` and ``"imagenet"`` conv1 weights have different shapes (3x3 and
7x7); ``"small"`` and ``"strided"`` share the 3x3 shape, so a checkpoint of one loads
into the other.

Bottleneck networks (ResNet-50, FL-RA-50) start with every residual branch's last
BatchNorm scale at zero (torchvision's ``zero_init_residual``; Goyal et al., 2017), so
each block starts as the identity. Without it ResNet-50 does not train at the recipe's
learning rate: on 1,500 PneumoniaMNIST images, 3 epochs of SGD at lr 0.05 from random
weights ended at the majority class (test 0.625) in 5 of 6 runs with torchvision's
default initialisation, and at 0.80-0.85 in 6 of 6 with this one (docs/results.md,
"ResNet-50 merges"). ResNet-10/18 keep the default: there it made no difference (0.835
and 0.838 for ResNet-18).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, cast

from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

from medvec.errors import ModelError
from medvec.models.registry import register_model

__all__ = [
    "SMALL_INPUT_MAX",
    "INITIALISATION",
    "BlockFactory",
    "Stem",
    "build_resnet",
    "make_stem_conv",
    "resnet10",
    "resnet18",
    "resnet50",
    "resolve_stem",
]

SMALL_INPUT_MAX = 64
STEM_WIDTH = 64

#: Bumped whenever a builder's initialisation changes, so that weights trained from the
#: old one (a cached pretrained base) are not taken for weights of the new one.
#: 2: bottleneck residual branches start at zero.
INITIALISATION = 2

# What torchvision's ``ResNet`` accepts as ``block``: a block class or any callable
# with the same signature that also carries the class attribute ``expansion``.
BlockFactory = type[BasicBlock] | type[Bottleneck] | Callable[..., nn.Module]


Stem = Literal["auto", "small", "strided", "imagenet"]
STEM_CONVS: dict[str, tuple[int, int, int]] = {  # kernel, stride, padding
    "small": (3, 1, 1),
    "strided": (3, 2, 1),
    "imagenet": (7, 2, 3),
}


def resolve_stem(stem: Stem, image_size: int) -> Stem:
    """The concrete stem ``"auto"`` stands for at ``image_size``."""
    if stem != "auto":
        return stem
    return "small" if image_size <= SMALL_INPUT_MAX else "imagenet"


def make_stem_conv(in_channels: int, stem: Stem, image_size: int = 28) -> nn.Conv2d:
    """The ``conv1`` of ``stem`` (``"auto"`` resolved at ``image_size``)."""
    kernel, stride, padding = STEM_CONVS[resolve_stem(stem, image_size)]
    conv = nn.Conv2d(
        in_channels, STEM_WIDTH, kernel_size=kernel, stride=stride, padding=padding, bias=False
    )
    # Same initialisation torchvision's ResNet gives every convolution.
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    return conv


def build_resnet(
    block: BlockFactory,
    layers: list[int],
    *,
    num_classes: int,
    in_channels: int = 3,
    image_size: int = 28,
    stem: Stem = "auto",
    **resnet_kwargs: Any,
) -> ResNet:
    """torchvision ``ResNet(block, layers)`` with ``stem`` (``"auto"``: by ``image_size``).

    ``block`` may be a factory (e.g. a ``functools.partial`` of an FL-RA block) as
    long as it carries ``expansion``; torchvision reads only that attribute.
    """
    if num_classes < 1 or in_channels < 1 or image_size < 8:
        raise ModelError(
            f"invalid ResNet config: num_classes={num_classes}, in_channels={in_channels}, "
            f"image_size={image_size}",
            hint="num_classes and in_channels must be >= 1 and image_size >= 8",
        )
    if not hasattr(block, "expansion"):
        raise ModelError(
            f"block factory {block!r} has no 'expansion' attribute",
            hint="set factory.expansion to the block class's expansion (1 or 4)",
        )
    model = ResNet(cast(Any, block), layers, num_classes=num_classes, **resnet_kwargs)
    concrete = resolve_stem(stem, image_size)
    if concrete != "imagenet":
        model.conv1 = make_stem_conv(in_channels, concrete)
        model.maxpool = cast(nn.MaxPool2d, nn.Identity())
    elif in_channels != 3:
        model.conv1 = make_stem_conv(in_channels, concrete)
    return model


@register_model()
def resnet10(
    *, num_classes: int, in_channels: int = 3, image_size: int = 28, stem: Stem = "auto"
) -> ResNet:
    """ResNet-10 (torchvision ``BasicBlock`` x [1, 1, 1, 1]): ResNet-18 with one block per
    stage, the same stages and widths. About 2.5x faster to train on a CPU at 28 px, for
    the CPU demo; its state-dict keys are a subset of ResNet-18's."""
    return build_resnet(
        BasicBlock,
        [1, 1, 1, 1],
        num_classes=num_classes,
        in_channels=in_channels,
        image_size=image_size,
        stem=stem,
    )


@register_model()
def resnet18(
    *, num_classes: int, in_channels: int = 3, image_size: int = 28, stem: Stem = "auto"
) -> ResNet:
    """ResNet-18 (torchvision ``BasicBlock`` x [2, 2, 2, 2]), stem chosen by image size."""
    return build_resnet(
        BasicBlock,
        [2, 2, 2, 2],
        num_classes=num_classes,
        in_channels=in_channels,
        image_size=image_size,
        stem=stem,
    )


@register_model()
def resnet50(
    *, num_classes: int, in_channels: int = 3, image_size: int = 28, stem: Stem = "auto"
) -> ResNet:
    """ResNet-50 V1.5 (torchvision ``Bottleneck`` x [3, 4, 6, 3]), stem chosen by image
    size, residual branches starting at zero."""
    return build_resnet(
        Bottleneck,
        [3, 4, 6, 3],
        num_classes=num_classes,
        in_channels=in_channels,
        image_size=image_size,
        stem=stem,
        zero_init_residual=True,
    )
