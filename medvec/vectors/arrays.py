"""``ArrayReader``: a safetensors file's tensors (or ranges of them) as numpy arrays.

Reads go through ``readinto`` into memory the caller or the reader owns, never
through ``mmap``: the pages of N memory-mapped files stay in the process's
resident set as they are touched, so merging N vectors would grow with N. Plain
reads into a reused buffer keep memory at the size of that buffer. ``readinto``
releases the GIL, so reads of several files may run on a thread pool.

Elements come back in their storage dtype (``floats.storage_dtype``: bfloat16 as
``uint16``). Safetensors stores little-endian data; like the safetensors library on
CPU, this reader assumes a little-endian host. No torch: ``LazyTensorReader`` adds
tensors on top for the code that holds models.
"""

from __future__ import annotations

from io import FileIO
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import numpy as np
from numpy.typing import NDArray

from medvec.vectors.floats import storage_dtype
from medvec.vectors.header import (
    DEFAULT_MAX_HEADER_BYTES,
    SafetensorsHeader,
    TensorInfo,
    read_exact_into,
    read_safetensors_header,
)

__all__ = ["ArrayReader"]


class ArrayReader:
    """Random access to the tensors of a safetensors file, one range at a time."""

    def __init__(self, path: str | Path, *, max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES):
        self.path = Path(path)
        self.header: SafetensorsHeader = read_safetensors_header(self.path, max_header_bytes)
        self._handle: FileIO = open(self.path, "rb", buffering=0)  # noqa: SIM115
        self._raw: NDArray[np.uint8] | None = None

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

    def read_bytes_into(self, name: str, out: memoryview, start_byte: int = 0) -> None:
        """Fill ``out`` with the bytes of tensor ``name`` from ``start_byte`` on."""
        info = self.info(name)
        if start_byte < 0 or start_byte + len(out) > info.nbytes:
            raise ValueError(f"bytes [{start_byte}, {start_byte + len(out)}) outside {name!r}")
        read_exact_into(self._handle, info.begin + start_byte, out, self.path)

    def read_array_into(self, name: str, out: NDArray[Any], start: int = 0) -> NDArray[Any]:
        """Fill the 1-D contiguous ``out`` with elements ``[start, start + out.size)``."""
        info = self.info(name)
        if out.dtype != storage_dtype(info.dtype_name) or not out.flags.c_contiguous:
            raise ValueError(
                f"out must be a contiguous {storage_dtype(info.dtype_name)} array, got {out.dtype}"
            )
        if start < 0 or start + out.size > info.numel:
            raise ValueError(f"elements [{start}, {start + out.size}) outside {name!r}")
        offset = info.begin + start * info.itemsize
        read_exact_into(self._handle, offset, out.reshape(-1).view(np.uint8).data, self.path)
        return out

    def read_array(self, name: str, *, copy: bool = False) -> NDArray[Any]:
        """The whole tensor ``name`` (flat); shares a reusable buffer unless ``copy``."""
        info = self.info(name)
        dtype = storage_dtype(info.dtype_name)
        if copy:
            return self.read_array_into(name, np.empty(info.numel, dtype=dtype))
        if self._raw is None or self._raw.size < info.nbytes:
            largest = max((t.nbytes for t in self.header.tensors.values()), default=0)
            self._raw = np.empty(max(info.nbytes, largest), dtype=np.uint8)
        return self.read_array_into(name, self._raw[: info.nbytes].view(dtype))

    def close(self) -> None:
        self._handle.close()
        self._raw = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
