"""``LazyTensorReader``: one tensor (or a slice of one) at a time, by plain file reads.

Reads go through ``readinto`` into memory the caller or the reader owns, never
through ``mmap``: the pages of N memory-mapped files stay in the process's
resident set as they are touched, so merging N vectors would grow with N. Plain
reads into a reused buffer keep memory at the size of that buffer.

Safetensors stores little-endian data; like the safetensors library on CPU, this
reader assumes a little-endian host.
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import BinaryIO

import torch
from torch import Tensor

from medvec.vectors.errors import MalformedFileError
from medvec.vectors.header import (
    DEFAULT_MAX_HEADER_BYTES,
    SafetensorsHeader,
    TensorInfo,
    read_safetensors_header,
)

__all__ = ["LazyTensorReader", "read_exact_into"]


def read_exact_into(handle: BinaryIO, offset: int, view: memoryview, path: Path) -> None:
    """Fill ``view`` with the bytes at ``offset``; a short read means the file changed."""
    handle.seek(offset)
    filled = 0
    while filled < len(view):
        got = handle.readinto(view[filled:])
        if not got:
            raise MalformedFileError(
                f"{path.name} ended early while reading at byte {offset + filled}",
                hint="the file was truncated or replaced while being read",
            )
        filled += got


def _bytes_of(tensor: Tensor) -> memoryview:
    """A writable byte view of a contiguous CPU tensor (works for bfloat16 too)."""
    return memoryview(tensor.reshape(-1).view(torch.uint8).numpy()).cast("B")


class LazyTensorReader:
    """Random access to the tensors of a safetensors file, one at a time.

    ``read(name)`` returns a tensor that shares the reader's reusable buffer: it is
    valid until the next ``read`` (pass ``copy=True`` to keep it). ``read_into``
    fills caller-owned memory with a range of a tensor's elements, which is what the
    streaming merge engine uses to stack N vectors without extra copies.
    """

    def __init__(self, path: str | Path, *, max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES):
        self.path = Path(path)
        self.header: SafetensorsHeader = read_safetensors_header(self.path, max_header_bytes)
        self._handle: BinaryIO = open(self.path, "rb", buffering=0)  # noqa: SIM115
        self._buffer: Tensor | None = None

    @property
    def metadata(self) -> dict[str, str]:
        return self.header.metadata

    def keys(self) -> list[str]:
        """Tensor names in file order."""
        return self.header.names()

    def __contains__(self, name: object) -> bool:
        return name in self.header.tensors

    def info(self, name: str) -> TensorInfo:
        try:
            return self.header.tensors[name]
        except KeyError:
            raise KeyError(f"{self.path.name} holds no tensor {name!r}") from None

    def read(self, name: str, *, copy: bool = False) -> Tensor:
        """The whole tensor ``name``; shares the reusable buffer unless ``copy``."""
        info = self.info(name)
        if copy:
            out = torch.empty(info.shape, dtype=info.dtype)
            self.read_into(name, out.reshape(-1))
            return out
        buffer = self._buffer_for(info.nbytes)
        raw = buffer[: info.nbytes]
        read_exact_into(self._handle, info.begin, _bytes_of(raw), self.path)
        return raw.view(info.dtype).reshape(info.shape)

    def read_into(self, name: str, out: Tensor, start: int = 0) -> Tensor:
        """Fill the 1-D contiguous ``out`` with elements ``[start, start + out.numel())``."""
        info = self.info(name)
        if out.dtype != info.dtype or not out.is_contiguous() or out.device.type != "cpu":
            raise ValueError(f"out must be a contiguous CPU {info.dtype} tensor, got {out.dtype}")
        if start < 0 or start + out.numel() > info.numel:
            raise ValueError(f"elements [{start}, {start + out.numel()}) outside {name!r}")
        offset = info.begin + start * info.dtype.itemsize
        read_exact_into(self._handle, offset, _bytes_of(out), self.path)
        return out

    def _buffer_for(self, nbytes: int) -> Tensor:
        if self._buffer is None or self._buffer.numel() < nbytes:
            largest = max((t.nbytes for t in self.header.tensors.values()), default=0)
            self._buffer = torch.empty(max(nbytes, largest), dtype=torch.uint8)
        return self._buffer

    def close(self) -> None:
        self._handle.close()
        self._buffer = None

    def __enter__(self) -> LazyTensorReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
