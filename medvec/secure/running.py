"""Running sums of shares: each server's sum over a base's current set, moved, not rebuilt.

Issue 10's running sums keep ``sum_i w_i tau_i`` of a base's current vectors so that a
linear merge reads one file instead of N. Secure mode does the same on each side with
shares: the registry keeps ``sum_i w_i A_i`` and the share holder ``sum_i w_i B_i``, one
running file per base and weighting (:func:`weighting_of`). When a sum is asked for a set
that differs from the one the file holds, the file is moved: superseded members are
subtracted and new ones added (mod 2^64, exact), or it is rebuilt from every member when
that reads fewer files. Either way the bytes equal the sum computed from scratch.

A running file is each server's private cache and is never released by itself: the
share holder releases a sum only through its guard (K and the differencing rule, on
hospitals; :mod:`medvec.secure.guard`), whichever way the sum was computed, so moving the
file by one member never releases two sums that differ by one member.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from medvec.errors import MedVecError, SecureAggregationError
from medvec.secure.shares import SumInfo, combine_shares, read_sum_info

__all__ = ["SumUpdate", "advance_sum", "running_sum_name", "weighting_of"]

#: where a member's share file is (``None``: gone, so the running file cannot be moved)
Locate = Callable[[str], Path | None]


@dataclass(frozen=True)
class SumUpdate:
    """How a sum was computed: moved from the running file, or rebuilt from every member."""

    sha256: str
    moved: bool
    added: int
    removed: int

    @property
    def shares_read(self) -> int:
        return self.added + self.removed


def weighting_of(members: Mapping[str, int]) -> str:
    """``uniform`` when every weight is 1 (task arithmetic), else ``weighted``: the two
    kinds of sum a registry asks for, each with its own running file."""
    return "uniform" if all(int(w) == 1 for w in members.values()) else "weighted"


def running_sum_name(base_sha256: str, members: Mapping[str, int]) -> str:
    return f"share-sums-{base_sha256}-{weighting_of(members)}.safetensors"


def _held(running: Path) -> dict[str, int] | None:
    if not running.is_file():
        return None
    try:
        return read_sum_info(running).members
    except (MedVecError, OSError, ValueError):
        return None


def _path(locate: Locate, member: str) -> Path:
    path = locate(member)
    if path is None or not path.is_file():
        raise SecureAggregationError(f"no share file for member {member}")
    return path


def advance_sum(running: Path, members: Mapping[str, int], locate: Locate, out: Path) -> SumUpdate:
    """Write ``sum_j w_j * share_j`` over ``members`` (pair id -> weight) to ``out`` and
    keep it as the running file ``running``.

    From the running file when it holds a set that differs in fewer members than the
    new set has (a changed weight counts as one removal and one addition) and every
    removed member's share is still there; else from scratch.
    """
    wanted = {str(m): int(w) for m, w in sorted(members.items())}
    info = SumInfo(members=wanted)
    held = _held(running)
    update: SumUpdate | None = None
    if held is not None:
        removed = {m: w for m, w in held.items() if wanted.get(m) != w}
        added = {m: w for m, w in wanted.items() if held.get(m) != w}
        gone = [m for m in removed if locate(m) is None]
        if len(removed) + len(added) < len(wanted) and not gone:
            digest = combine_shares(
                running,
                [(_path(locate, m), w) for m, w in sorted(added.items())],
                [(_path(locate, m), w) for m, w in sorted(removed.items())],
                out,
                info,
            )
            update = SumUpdate(digest, True, len(added), len(removed))
    if update is None:
        ordered = sorted(wanted.items())
        digest = combine_shares(None, [(_path(locate, m), w) for m, w in ordered], [], out, info)
        update = SumUpdate(digest, False, len(wanted), 0)
    _keep(out, running)
    return update


def _keep(out: Path, running: Path) -> None:
    """Make ``running`` hold ``out``'s bytes through a temporary name, so a concurrent
    reader sees the old file or the new one, each holding the members its header names.
    A hard link when both are on one filesystem (no second write; nothing rewrites a sum
    file in place), else a copy."""
    running.parent.mkdir(parents=True, exist_ok=True)
    temporary = running.with_name(f".{running.name}.{os.getpid()}.{os.urandom(4).hex()}")
    try:
        try:
            os.link(out, temporary)
        except OSError:
            shutil.copyfile(out, temporary)
        os.replace(temporary, running)
    finally:
        temporary.unlink(missing_ok=True)
