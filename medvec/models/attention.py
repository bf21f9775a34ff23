"""Multi-head self-attention over a 2-D feature map, the attention half of an FL-RA block.

Queries come from a 1x1 convolution with the block's stride, so the attention output
lies on the same (strided) grid as the 3x3 convolution it is fused with. Keys and
values come from 1x1 convolutions of the full-resolution input, max-pooled by
``kv_stride`` to cut the cost of attention, unless the map is already so small that
pooling would leave fewer than ``min_kv_side`` positions per side.
"""

from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor, nn

from medvec.errors import ModelError

__all__ = ["AttentionFactory", "MultiHeadSelfAttention2d"]

# Builds the attention of one block: (in_channels, out_channels, stride) -> module
# mapping (N, in_channels, H, W) to (N, out_channels, ceil(H / stride), ceil(W / stride)).
AttentionFactory = Callable[[int, int, int], nn.Module]


class MultiHeadSelfAttention2d(nn.Module):
    """Multi-head self-attention from ``in_channels`` to ``out_channels`` on a 2-D map.

    Args:
        in_channels: channels of the input map.
        out_channels: channels of the output (split into ``heads`` heads).
        stride: stride of the query grid (the stride of the fused convolution).
        heads: number of heads; must divide ``out_channels``.
        kv_stride: max-pool kernel and stride applied to keys and values.
        min_kv_side: skip the key/value pooling when it would leave a side shorter
            than this (e.g. the 7x7 or 4x4 maps of the last stage).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        stride: int = 1,
        *,
        heads: int = 4,
        kv_stride: int = 2,
        min_kv_side: int = 4,
    ) -> None:
        super().__init__()
        if heads < 1 or out_channels % heads != 0:
            raise ModelError(
                f"attention heads ({heads}) must divide the channels ({out_channels})",
                hint="use a power of two up to 64 (stage widths are 64..2048)",
                heads=heads,
                channels=out_channels,
            )
        if stride < 1 or kv_stride < 1 or min_kv_side < 1:
            raise ModelError(
                f"invalid attention strides: stride={stride}, kv_stride={kv_stride}, "
                f"min_kv_side={min_kv_side}",
                hint="strides and min_kv_side must be >= 1",
            )
        self.heads = heads
        self.kv_stride = kv_stride
        self.min_kv_side = min_kv_side
        self.q = nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False)
        self.k = nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False)
        self.v = nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False)
        self.proj = nn.Conv2d(out_channels, out_channels, kernel_size=1, bias=False)

    def _pool_kv(self, t: Tensor) -> Tensor:
        height, width = t.shape[-2:]
        if self.kv_stride == 1 or min(height, width) // self.kv_stride < self.min_kv_side:
            return t
        return F.max_pool2d(t, kernel_size=self.kv_stride, stride=self.kv_stride, ceil_mode=True)

    def _split_heads(self, t: Tensor) -> Tensor:
        """(N, C, H, W) -> (N, heads, H*W, C / heads)."""
        n, c, h, w = t.shape
        return t.reshape(n, self.heads, c // self.heads, h * w).transpose(-1, -2)

    def forward(self, x: Tensor) -> Tensor:
        q = self.q(x)
        n, c, h, w = q.shape
        k = self._pool_kv(self.k(x))
        v = self._pool_kv(self.v(x))
        out = F.scaled_dot_product_attention(
            self._split_heads(q), self._split_heads(k), self._split_heads(v)
        )
        out = out.transpose(-1, -2).reshape(n, c, h, w)
        projected: Tensor = self.proj(out)
        return projected

    def extra_repr(self) -> str:
        return f"heads={self.heads}, kv_stride={self.kv_stride}, min_kv_side={self.min_kv_side}"
