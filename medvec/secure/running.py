"""Running sums of shares: each server's sum over a base's current set, moved, not rebuilt.

Issue 10's running sums keep ``sum_i w_i tau_i`` of a base's current vectors so that a
linear merge reads one file instead of N. Secure mode does the same on each side with
shares, which each hospital pre-scaled by its public weight: the registry keeps the plain
sum ``sum_i A_i`` and the share holder ``sum_i B_i``, one running file per base. When a
sum is asked for a set that differs from the one the file holds, the file is moved:
superseded members are subtracted and new ones added (mod 2^64, exact), or it is rebuilt
from every member when that reads fewer files. Either way the bytes equal the sum
computed from scratch.

A running file is each server's private cache and is never released by itself: the
share holder releases a sum only through its guard (K, 0/1 membership and the
differencing rule, on hospitals; :mod:`medvec.secure.guard`), whichever way the sum was
computed, so moving the file by one member never releases two sums that differ by one
member.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path

from medvec.errors import MedVecError, SecureAggregationError
from medvec.secure.shares import combine_shares, read_sum_info

__all__ = ["SumUpdate", "advance_sum", "running_sum_name"]

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


def running_sum_name(base_sha256: str) -> str:
    return f"share-sums-{base_sha256}.safetensors"


def _held(running: Path) -> set[str] | None:
    if not running.is_file():
        return None
    try:
        return set(read_sum_info(running).members)
    except (MedVecError, OSError, ValueError):
        return None


def _path(locate: Locate, member: str) -> Path:
    path = locate(member)
    if path is None or not path.is_file():
        raise SecureAggregationError(f"no share file for member {member}")
    return path


def advance_sum(running: Path, members: Collection[str], locate: Locate, out: Path) -> SumUpdate:
    """Write the plain sum of the ``members``' shares (pair ids) to ``out`` and keep it as
    the running file ``running``.

    From the running file when it holds a set that differs in fewer members than the
    new set has and every removed member's share is still there; else from scratch.
    """
    wanted = set(members)
    held = _held(running)
    update: SumUpdate | None = None
    if held is not None:
        removed, added = sorted(held - wanted), sorted(wanted - held)
        gone = [m for m in removed if locate(m) is None]
        if len(removed) + len(added) < len(wanted) and not gone:
            digest = combine_shares(
                running,
                [_path(locate, m) for m in added],
                [_path(locate, m) for m in removed],
                out,
            )
            update = SumUpdate(digest, True, len(added), len(removed))
    if update is None:
        digest = combine_shares(None, [_path(locate, m) for m in sorted(wanted)], [], out)
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
