"""``SafetensorsWriter``: write a safetensors file tensor by tensor, atomically.

The header is computed first from the names, dtypes and shapes the file will hold;
then tensor bytes are appended in that order (whole tensors or in chunks). The
file lives under a temporary name until ``commit`` fsyncs it and renames it into
place, so no reader ever sees a half-written file under the real name. The
sha256 of the bytes is computed while writing.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

import torch
from torch import Tensor

from medvec.vectors.header import METADATA_KEY, dtype_name

__all__ = ["SafetensorsWriter", "TensorLayout"]

TensorLayout = tuple[str, torch.dtype, Sequence[int]]


def _header_bytes(layout: Sequence[TensorLayout], metadata: Mapping[str, str]) -> bytes:
    doc: dict[str, object] = {}
    if metadata:
        doc[METADATA_KEY] = dict(metadata)
    cursor = 0
    for name, dtype, shape in layout:
        nbytes = int(torch.Size(shape).numel()) * dtype.itemsize
        doc[name] = {
            "dtype": dtype_name(dtype),
            "shape": list(shape),
            "data_offsets": [cursor, cursor + nbytes],
        }
        cursor += nbytes
    raw = json.dumps(doc, separators=(",", ":")).encode("utf-8")
    return raw + b" " * (-len(raw) % 8)  # the data section starts 8-byte aligned


class SafetensorsWriter:
    """Write tensors in the order of ``layout``; ``commit()`` renames the file into place."""

    def __init__(
        self, path: str | Path, layout: Sequence[TensorLayout], metadata: Mapping[str, str]
    ) -> None:
        self.path = Path(path)
        self._layout = [(name, dtype, tuple(shape)) for name, dtype, shape in layout]
        self._remaining = {
            name: int(torch.Size(shape).numel()) * dtype.itemsize for name, dtype, shape in layout
        }
        self._index = 0
        self._digest = hashlib.sha256()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex}.tmp")
        self._handle: BinaryIO = open(self._tmp, "wb")  # noqa: SIM115
        header = _header_bytes(self._layout, metadata)
        self._write(struct.pack("<Q", len(header)) + header)
        self._committed = False

    def _write(self, data: bytes | memoryview) -> None:
        self._handle.write(data)
        self._digest.update(data)

    def _current(self) -> tuple[str, torch.dtype]:
        while self._index < len(self._layout):
            name, dtype, _ = self._layout[self._index]
            if self._remaining[name]:
                return name, dtype
            self._index += 1
        raise ValueError(f"{self.path.name}: every tensor of the layout is already written")

    def write(self, name: str, data: Tensor) -> None:
        """Append ``data`` (a whole tensor or its next chunk) to tensor ``name``."""
        expected, dtype = self._current()
        if name != expected:
            raise ValueError(f"tensors must be written in layout order: expected {expected!r}")
        if data.dtype != dtype:
            raise ValueError(f"tensor {name!r} is {dtype}, got {data.dtype}")
        flat = data.detach().to("cpu").contiguous().reshape(-1)
        view = memoryview(flat.view(torch.uint8).numpy()).cast("B")
        if len(view) > self._remaining[name]:
            raise ValueError(f"more bytes than tensor {name!r} holds")
        self._write(view)
        self._remaining[name] -= len(view)

    def write_bytes(self, name: str, data: bytes | memoryview) -> None:
        """Append raw little-endian bytes to tensor ``name`` (copying from another file)."""
        expected, _ = self._current()
        if name != expected or len(data) > self._remaining[name]:
            raise ValueError(f"bytes for {name!r} out of layout order or too many")
        self._write(data)
        self._remaining[name] -= len(data)

    def commit(self) -> str:
        """Check completeness, fsync, rename into place; return the file's sha256."""
        missing = [name for name, left in self._remaining.items() if left]
        if missing:
            raise ValueError(f"{self.path.name}: tensors not fully written: {missing[:5]}")
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self._handle.close()
        os.replace(self._tmp, self.path)
        self._committed = True
        return self._digest.hexdigest()

    def abort(self) -> None:
        if not self._handle.closed:
            self._handle.close()
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> SafetensorsWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self._committed:
            self.abort()
