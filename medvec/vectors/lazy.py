"""``LazyTensorReader``: one tensor (or a slice of one) at a time as torch tensors.

The reading is ``ArrayReader``'s (plain ``readinto`` calls, never ``mmap``); this class
hands the bytes out as tensors for the code that holds models (screening, tuning,
secure shares). The merge engine reads numpy arrays and never imports torch.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from medvec.vectors.arrays import ArrayReader
from medvec.vectors.header import read_exact_into

__all__ = ["LazyTensorReader", "read_exact_into"]


def _bytes_of(tensor: Tensor) -> memoryview:
    """A writable byte view of a contiguous CPU tensor (works for bfloat16 too)."""
    return tensor.reshape(-1).view(torch.uint8).numpy().data.cast("B")


class LazyTensorReader(ArrayReader):
    """Random access to the tensors of a safetensors file, one at a time.

    ``read(name)`` returns a tensor that shares the reader's reusable buffer: it is
    valid until the next ``read`` (pass ``copy=True`` to keep it). ``read_into``
    fills caller-owned memory with a range of a tensor's elements.
    """

    def read(self, name: str, *, copy: bool = False) -> Tensor:
        """The whole tensor ``name``; shares the reusable buffer unless ``copy``."""
        info = self.info(name)
        if copy:
            out = torch.empty(info.shape, dtype=info.dtype)
            self.read_into(name, out.reshape(-1))
            return out
        raw = self.read_array(name).view(np.uint8)
        return torch.from_numpy(raw).view(info.dtype).reshape(info.shape)

    def read_into(self, name: str, out: Tensor, start: int = 0) -> Tensor:
        """Fill the 1-D contiguous ``out`` with elements ``[start, start + out.numel())``."""
        info = self.info(name)
        if out.dtype != info.dtype or not out.is_contiguous() or out.device.type != "cpu":
            raise ValueError(f"out must be a contiguous CPU {info.dtype} tensor, got {out.dtype}")
        if start < 0 or start + out.numel() > info.numel:
            raise ValueError(f"elements [{start}, {start + out.numel()}) outside {name!r}")
        self.read_bytes_into(name, _bytes_of(out), start * info.itemsize)
        return out
