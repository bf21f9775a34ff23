"""Open and check every input of a file merge before any tensor is read.

A merge that would fail half-way (another base, another architecture, a model
file among the vectors) fails here, cheaply, from headers alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from medvec.errors import MergeError
from medvec.hashing import sha256_file
from medvec.vectors.arrays import ArrayReader
from medvec.vectors.header import DEFAULT_MAX_HEADER_BYTES
from medvec.vectors.io import metadata_from_header
from medvec.vectors.metadata import VectorMetadata
from medvec.vectors.validate import (
    base_floating_tensors,
    check_base_identity,
    check_same_spec,
    check_structure,
)

__all__ = ["MergeInputs", "open_inputs"]


@dataclass
class MergeInputs:
    """Open readers for the base and every vector, with what their headers say."""

    base: ArrayReader
    base_sha256: str
    vectors: list[ArrayReader]
    metadata: list[VectorMetadata]
    floating: set[str] = field(default_factory=set)
    stack: ExitStack = field(default_factory=ExitStack)

    def close(self) -> None:
        self.stack.close()


def open_inputs(
    base_path: Path,
    vector_paths: Sequence[Path],
    *,
    base_sha256: str | None = None,
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
    rebase: bool = False,
    reader: type[ArrayReader] = ArrayReader,
) -> MergeInputs:
    """Readers for base and vectors, or ``MergeError`` / ``IncompatibleBaseError``.

    ``rebase``: vectors made against another base of the same architecture (an older
    generation) are applied to this one as they are; their names, shapes and dtypes are
    still checked. Without it every vector must name this base's sha256. ``reader``: the
    class that opens the files (``LazyTensorReader`` for code that wants tensors).
    """
    if not vector_paths:
        raise MergeError("no vectors to merge", hint="pass at least one data vector file")
    duplicates = {p for p in vector_paths if list(vector_paths).count(p) > 1}
    if duplicates:
        raise MergeError(
            f"vector {sorted(map(str, duplicates))[0]} is given more than once",
            hint="list each vector once; use --weights to give one more weight",
        )
    stack = ExitStack()
    try:
        base = stack.enter_context(reader(base_path))
        expected = base_floating_tensors(base.header, base_path)
        sha = base_sha256 or sha256_file(base_path)
        readers, metas = [], []
        for path in vector_paths:
            opened = stack.enter_context(reader(path, max_header_bytes=max_header_bytes))
            meta = metadata_from_header(opened.header, path)
            if rebase:
                check_same_spec(meta, base.header)
            else:
                check_base_identity(meta, base.header, sha)
            check_structure(expected, opened.header.tensors)
            readers.append(opened)
            metas.append(meta)
    except BaseException:
        stack.close()
        raise
    return MergeInputs(base, sha, readers, metas, set(expected), stack)
