"""``SplitRef``: one split of a benchmark, detached from any database session (no torch:
the merge worker passes it on without loading any data)."""

from __future__ import annotations

from dataclasses import dataclass

from app.models import Benchmark

__all__ = ["SplitRef"]


@dataclass(frozen=True)
class SplitRef:
    """One split of a benchmark, detached from any database session."""

    benchmark_id: str
    name: str
    sha256: str
    num_classes: int
    split: str

    @classmethod
    def of(cls, benchmark: Benchmark, split: str) -> SplitRef:
        return cls(benchmark.id, benchmark.name, benchmark.sha256, benchmark.num_classes, split)
