"""A bounded reader of the safetensors header, written against the format itself.

Layout of a safetensors file: 8 bytes little-endian header length ``n``, ``n``
bytes of JSON (``{name: {"dtype", "shape", "data_offsets": [begin, end]}, ...,
"__metadata__": {str: str}}``), then the tensor data; offsets are relative to the
start of the data. Parsing it here (rather than through the safetensors library)
lets untrusted uploads be refused on a size bound before any JSON is read, and
gives the byte offsets that ``LazyTensorReader`` needs for plain reads.
"""

from __future__ import annotations

import json
import math
import os
import struct
from dataclasses import dataclass, field
from io import RawIOBase
from pathlib import Path
from typing import TYPE_CHECKING

from medvec.vectors.errors import HeaderTooLargeError, MalformedFileError

if TYPE_CHECKING:
    import torch

__all__ = [
    "DEFAULT_MAX_HEADER_BYTES",
    "DTYPES",
    "FLOAT_DTYPES",
    "SafetensorsHeader",
    "TensorInfo",
    "dtype_name",
    "read_exact_into",
    "read_safetensors_header",
    "torch_dtype",
]

DEFAULT_MAX_HEADER_BYTES = 16 * 1024 * 1024
METADATA_KEY = "__metadata__"

#: bytes per element of each safetensors dtype; the header is read without torch
DTYPES: dict[str, int] = {
    "F64": 8,
    "F32": 4,
    "F16": 2,
    "BF16": 2,
    "I64": 8,
    "I32": 4,
    "I16": 2,
    "I8": 1,
    "U8": 1,
    "U64": 8,
    "BOOL": 1,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
}
FLOAT_DTYPES = frozenset({"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2"})

#: torch's attribute name of each safetensors dtype
_TORCH_NAMES = {
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "I64": "int64",
    "I32": "int32",
    "I16": "int16",
    "I8": "int8",
    "U8": "uint8",
    "U64": "uint64",
    "BOOL": "bool",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2",
}


def torch_dtype(name: str) -> torch.dtype:
    """The torch dtype of a safetensors dtype name (``"F32"`` -> ``torch.float32``)."""
    import torch

    dtype: torch.dtype = getattr(torch, _TORCH_NAMES[name])
    return dtype


def dtype_name(dtype: torch.dtype) -> str:
    """The safetensors name of a torch dtype (``torch.float32`` -> ``"F32"``)."""
    for name, attribute in _TORCH_NAMES.items():
        if str(dtype) == f"torch.{attribute}":
            return name
    raise MalformedFileError(f"dtype {dtype} cannot be stored in safetensors")


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lies in the file and what it holds (``dtype_name``: safetensors'
    name, e.g. ``"F32"``; ``dtype``: the torch dtype, which imports torch)."""

    name: str
    dtype_name: str
    shape: tuple[int, ...]
    begin: int  # absolute file offset of the first byte
    end: int  # absolute file offset one past the last byte

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.end - self.begin

    @property
    def itemsize(self) -> int:
        return DTYPES[self.dtype_name]

    @property
    def is_floating_point(self) -> bool:
        return self.dtype_name in FLOAT_DTYPES

    @property
    def dtype(self) -> torch.dtype:
        return torch_dtype(self.dtype_name)


@dataclass(frozen=True)
class SafetensorsHeader:
    """The parsed header: tensors in file order, the string metadata, the data offset."""

    tensors: dict[str, TensorInfo]
    metadata: dict[str, str] = field(default_factory=dict)
    header_bytes: int = 0
    file_size: int = 0

    @property
    def data_offset(self) -> int:
        return 8 + self.header_bytes

    def names(self) -> list[str]:
        return list(self.tensors)


def _malformed(path: Path, why: str) -> MalformedFileError:
    return MalformedFileError(
        f"{path.name} is not a valid safetensors file: {why}",
        hint="the file is truncated or corrupted; write it again with medvec and re-upload",
        path=str(path),
    )


def _tensor_info(path: Path, name: str, raw: object, data_offset: int) -> TensorInfo:
    if not isinstance(raw, dict):
        raise _malformed(path, f"entry {name!r} is not an object")
    dtype = str(raw.get("dtype"))
    shape, offsets = raw.get("shape"), raw.get("data_offsets")
    if dtype not in DTYPES:
        raise _malformed(path, f"tensor {name!r} has unsupported dtype {raw.get('dtype')!r}")
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise _malformed(path, f"tensor {name!r} has an invalid shape {shape!r}")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(isinstance(o, int) and o >= 0 for o in offsets)
        or offsets[0] > offsets[1]
    ):
        raise _malformed(path, f"tensor {name!r} has invalid data_offsets {offsets!r}")
    info = TensorInfo(name, dtype, tuple(shape), data_offset + offsets[0], data_offset + offsets[1])
    expected = info.numel * info.itemsize
    if info.nbytes != expected:
        raise _malformed(
            path, f"tensor {name!r} spans {info.nbytes} bytes, its shape needs {expected}"
        )
    return info


def _check_layout(path: Path, tensors: dict[str, TensorInfo], data_offset: int, size: int) -> None:
    cursor = data_offset
    for info in sorted(tensors.values(), key=lambda t: (t.begin, t.end)):
        if info.begin != cursor:
            raise _malformed(path, f"tensor {info.name!r} overlaps or leaves a gap in the data")
        cursor = info.end
    if cursor != size:
        raise _malformed(
            path,
            f"header declares {cursor - data_offset} bytes of tensor data, "
            f"file holds {size - data_offset} (truncated or padded)",
        )


def _fileno(handle: RawIOBase) -> int:
    try:
        return handle.fileno()
    except (OSError, ValueError):  # io.UnsupportedOperation: an in-memory stream
        return -1


def read_exact_into(handle: RawIOBase, offset: int, view: memoryview, path: Path) -> None:
    """Fill ``view`` with the bytes at ``offset``; a short read means the file changed.

    Positional reads (``os.preadv``) leave the handle's position alone, so threads may
    read one file at once; they release the GIL while the kernel copies.
    """
    fd = _fileno(handle) if hasattr(os, "preadv") else -1
    if fd < 0:
        handle.seek(offset)
    filled = 0
    while filled < len(view):
        rest = view[filled:]
        got = os.preadv(fd, [rest], offset + filled) if fd >= 0 else handle.readinto(rest)
        if not got:
            raise MalformedFileError(
                f"{path.name} ended early while reading at byte {offset + filled}",
                hint="the file was truncated or replaced while being read",
            )
        filled += got


def read_safetensors_header(
    path: str | Path, max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES
) -> SafetensorsHeader:
    """Parse and check the header of a safetensors file without reading tensor data.

    Raises ``HeaderTooLargeError`` when the declared header exceeds
    ``max_header_bytes`` (checked before the header is read) and
    ``MalformedFileError`` for a truncated file, bad JSON, unknown dtypes, or
    offsets that overlap, leave gaps or do not end at the end of the file.
    """
    path = Path(path)
    size = os.path.getsize(path)
    with open(path, "rb") as handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            raise _malformed(path, f"{size} bytes is too short for the 8-byte header length")
        (length,) = struct.unpack("<Q", prefix)
        if length > max_header_bytes:
            raise HeaderTooLargeError(
                f"{path.name} declares a {length}-byte header, over the {max_header_bytes}-byte "
                "bound",
                hint="a real model header is a few hundred kilobytes; the file is not a "
                "MedVec vector or was tampered with",
                header_bytes=length,
                max_header_bytes=max_header_bytes,
            )
        if 8 + length > size:
            raise _malformed(path, f"header of {length} bytes runs past the end of the file")
        raw = handle.read(length)
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _malformed(path, f"header is not JSON ({exc})") from exc
    except RecursionError:
        # a hostile header nests arrays or objects deeper than the parser's stack allows;
        # no real header nests more than a few levels
        raise _malformed(path, "header JSON is nested too deeply") from None
    if not isinstance(doc, dict):
        raise _malformed(path, "header is not a JSON object")
    metadata = doc.pop(METADATA_KEY, None) or {}
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise _malformed(path, "__metadata__ must map strings to strings")
    data_offset = 8 + length
    tensors = {name: _tensor_info(path, name, raw, data_offset) for name, raw in doc.items()}
    _check_layout(path, tensors, data_offset, size)
    ordered = dict(sorted(tensors.items(), key=lambda item: item[1].begin))
    return SafetensorsHeader(ordered, dict(metadata), header_bytes=length, file_size=size)
