"""``SafetensorsWriter``: write a safetensors file tensor by tensor, atomically.

The header is computed first from the names, dtypes and shapes the file will hold;
then tensor bytes are appended in that order (whole tensors or in chunks). The
file lives under a temporary name until ``commit`` fsyncs it and renames it into
place, so no reader ever sees a half-written file under the real name. The
sha256 of the bytes is computed while writing, on a helper thread: ``hashlib``
releases the GIL on large buffers, so hashing overlaps the caller's next chunk instead
of adding to it.

Tensors are given as numpy arrays (in the storage dtype, ``floats.storage_dtype``) or
torch tensors; the layout names dtypes by their safetensors name (``"F32"``) or as a
torch dtype. The module itself never imports torch.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
import uuid
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np

from medvec.vectors.floats import storage_dtype
from medvec.vectors.header import DTYPES, METADATA_KEY, dtype_name

if TYPE_CHECKING:
    import torch

__all__ = ["SafetensorsWriter", "TensorLayout"]

TensorLayout = tuple[str, "str | torch.dtype", Sequence[int]]


def _name_of(dtype: str | torch.dtype) -> str:
    """The safetensors name of a dtype given by name or as a torch dtype."""
    return dtype if isinstance(dtype, str) and dtype in DTYPES else dtype_name(dtype)  # type: ignore[arg-type]


def _header_bytes(
    layout: Sequence[tuple[str, str, tuple[int, ...]]], metadata: Mapping[str, str]
) -> bytes:
    doc: dict[str, object] = {}
    if metadata:
        doc[METADATA_KEY] = dict(metadata)
    cursor = 0
    for name, dtype, shape in layout:
        nbytes = math.prod(shape) * DTYPES[dtype]
        doc[name] = {
            "dtype": dtype,
            "shape": list(shape),
            "data_offsets": [cursor, cursor + nbytes],
        }
        cursor += nbytes
    raw = json.dumps(doc, separators=(",", ":")).encode("utf-8")
    return raw + b" " * (-len(raw) % 8)  # the data section starts 8-byte aligned


class SafetensorsWriter:
    """Write tensors in the order of ``layout``; ``commit()`` renames the file into place."""

    def __init__(
        self,
        path: str | Path,
        layout: Sequence[TensorLayout],
        metadata: Mapping[str, str],
        *,
        hashed: bool = True,
        durable: bool = True,
    ) -> None:
        """``hashed=False`` skips the sha256 (``commit`` returns ``""``) and ``durable=False``
        the fsync before the rename: for derived files that are not content-addressed and
        are checked and rebuilt another way (running sums)."""
        self.path = Path(path)
        self._layout = [(name, _name_of(dtype), tuple(shape)) for name, dtype, shape in layout]
        self._remaining = {
            name: math.prod(shape) * DTYPES[dtype] for name, dtype, shape in self._layout
        }
        self._index = 0
        self._digest = hashlib.sha256() if hashed else None
        self._hasher = ThreadPoolExecutor(1, "medvec-writer") if hashed else None
        self._pending: Future[None] | None = None
        self._copy = bytearray()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex}.tmp")
        self._handle: BinaryIO = open(self._tmp, "wb")  # noqa: SIM115
        header = _header_bytes(self._layout, metadata)
        self._write(struct.pack("<Q", len(header)) + header)
        self._committed = False
        self._durable = durable

    def _write(self, data: bytes | memoryview) -> None:
        """Write ``data`` and add it to the hash. A hashed file is written and hashed on the
        helper thread from a copy of ``data`` (the caller may reuse its memory at once), so
        both overlap the caller's work on its next chunk."""
        if self._digest is None or self._hasher is None:
            self._handle.write(data)
            return
        self._settle()
        size = len(data)
        if len(self._copy) < size:
            self._copy = bytearray(size)
        view = memoryview(self._copy)[:size]
        view[:] = data
        self._pending = self._hasher.submit(self._write_and_hash, view)

    def _write_and_hash(self, data: memoryview) -> None:
        self._handle.write(data)
        assert self._digest is not None
        self._digest.update(data)

    def _settle(self) -> None:
        """Wait for the write in flight (and raise what it raised)."""
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()

    def _current(self) -> tuple[str, str]:
        while self._index < len(self._layout):
            name, dtype, _ = self._layout[self._index]
            if self._remaining[name]:
                return name, dtype
            self._index += 1
        raise ValueError(f"{self.path.name}: every tensor of the layout is already written")

    def write(self, name: str, data: Any) -> None:
        """Append ``data`` (a whole tensor or its next chunk: a numpy array in the storage
        dtype, or a torch tensor) to tensor ``name``."""
        expected, dtype = self._current()
        if name != expected:
            raise ValueError(f"tensors must be written in layout order: expected {expected!r}")
        if isinstance(data, np.ndarray):
            if data.dtype != storage_dtype(dtype):
                raise ValueError(f"tensor {name!r} is {dtype}, got an array of {data.dtype}")
            view = np.ascontiguousarray(data).reshape(-1).view(np.uint8).data
        else:
            import torch

            if dtype_name(data.dtype) != dtype:
                raise ValueError(f"tensor {name!r} is {dtype}, got {data.dtype}")
            flat = data.detach().to("cpu").contiguous().reshape(-1)
            view = flat.view(torch.uint8).numpy().data.cast("B")
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
        self._settle()
        if self._hasher is not None:
            self._hasher.shutdown(wait=True)
            self._hasher = None
        self._handle.flush()
        if self._durable:
            os.fsync(self._handle.fileno())
        self._handle.close()
        os.replace(self._tmp, self.path)
        self._committed = True
        return self._digest.hexdigest() if self._digest is not None else ""

    def abort(self) -> None:
        if self._hasher is not None:
            self._hasher.shutdown(wait=True)  # the write in flight, if any, ends first
            self._hasher = None
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
