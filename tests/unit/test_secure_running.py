"""Running sums of shares and the share holder's guard stated on hospitals (issue 16);
plain sums of pre-scaled shares (issue 22)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from medvec.errors import DifferencingSetError, SetTooSmallError
from medvec.secure import (
    check_query,
    decode_sum_to_vector,
    exposed_members,
    sum_shares,
    write_shares,
)
from medvec.secure.running import advance_sum
from medvec.secure.shares import read_sum_info
from medvec.vectors import VectorMetadata, load_vector

META = VectorMetadata(base_id="b", base_sha256="0" * 64, hospital="h", num_samples=7)


def _shares(folder: Path, count: int) -> dict[str, Path]:
    """Share B files of ``count`` random vectors pre-scaled by weights 3, 4, ..., by pair id."""
    torch.manual_seed(0)
    paths = {}
    for i in range(count):
        pair = f"{i:032x}"
        tensors = {"w": torch.randn(6, 5) * 0.1, "b": torch.randn(5)}
        write_shares(tensors, META, folder / f"a{i}", folder / f"b{i}", pair_id=pair, weight=i + 3)
        paths[pair] = folder / f"b{i}"
    return paths


def _scratch(paths: dict[str, Path], members: set[str], out: Path) -> str:
    return sum_shares([paths[m] for m in sorted(members)], out)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_running_sum_moves_by_the_changed_members_and_equals_the_sum_from_scratch(
    tmp_path: Path,
) -> None:
    paths = _shares(tmp_path, 6)
    p = sorted(paths)
    running = tmp_path / "running"
    first = {p[0], p[1], p[2], p[3]}
    built = advance_sum(running, first, paths.get, tmp_path / "s1")
    assert not built.moved and built.shares_read == 4
    assert read_sum_info(tmp_path / "s1").weight == 3 + 4 + 5 + 6
    # a hospital's share superseded by its new one: one subtracted, one added
    second = {p[0], p[1], p[2], p[4]}
    moved = advance_sum(running, second, paths.get, tmp_path / "s2")
    assert moved.moved and (moved.removed, moved.added) == (1, 1)
    assert _sha(tmp_path / "s2") == _scratch(paths, second, tmp_path / "scratch2")
    assert _sha(running) == moved.sha256  # the running file now holds the second set
    assert read_sum_info(running).weight == 3 + 4 + 5 + 7
    # a new member is only an addition
    third = {p[0], p[1], p[2], p[4], p[5]}
    again = advance_sum(running, third, paths.get, tmp_path / "s3")
    assert again.moved and (again.removed, again.added) == (0, 1)
    assert _sha(tmp_path / "s3") == _scratch(paths, third, tmp_path / "scratch3")
    # asking for the set the file holds reads no share at all (a retried merge)
    same = advance_sum(running, third, paths.get, tmp_path / "s4")
    assert same.moved and same.shares_read == 0 and same.sha256 == again.sha256


def test_running_sum_is_rebuilt_when_cheaper_or_a_removed_share_is_gone(tmp_path: Path) -> None:
    paths = _shares(tmp_path, 6)
    p = sorted(paths)
    running = tmp_path / "running"
    advance_sum(running, {p[0], p[1], p[2]}, paths.get, tmp_path / "s1")
    disjoint = {p[3], p[4], p[5]}  # moving would read 6 files, rebuilding 3
    rebuilt = advance_sum(running, disjoint, paths.get, tmp_path / "s2")
    assert not rebuilt.moved and rebuilt.shares_read == 3
    gone = {p[3], p[4], p[0]}
    located = {m: path for m, path in paths.items() if m != p[5]}
    fallback = advance_sum(running, gone, located.get, tmp_path / "s3")
    assert not fallback.moved
    assert fallback.sha256 == _scratch(paths, gone, tmp_path / "scratch")
    running.write_bytes(b"not a sum")  # a damaged running file is rebuilt, not trusted
    assert not advance_sum(running, gone, paths.get, tmp_path / "s4").moved


def test_guard_counts_hospitals_and_refuses_one_hospital_moving_the_sum() -> None:
    owners = {"a1": "a", "b1": "b", "c1": "c", "c2": "c", "d1": "d", "d2": "d"}
    released = [{"a1": 1, "b1": 1, "c1": 1}]
    # hospital c pushed again: {a, b, c_new} minus {a, b, c_old} is c's change alone
    with pytest.raises(DifferencingSetError) as caught:
        check_query(released, {"a1": 1, "b1": 1, "c2": 1}, 3, owners)
    assert caught.value.detail["exposed"] == ["c"]
    # without owners the two pair ids look like two members (what the rule must not miss)
    check_query(released, {"a1": 1, "b1": 1, "c2": 1}, 3)
    # two of a hospital's shares are one hospital towards K
    with pytest.raises(SetTooSmallError):
        check_query([], {"a1": 1, "c1": 1, "c2": 1}, 3, owners)
    # two hospitals updated: only the sum of their changes is revealed
    check_query([{"a1": 1, "c1": 1, "d1": 1}], {"a1": 1, "c2": 1, "d2": 1}, 3, owners)
    assert exposed_members([{"a1": 1, "c1": 1}, {"a1": 1, "c2": 1}], owners) == ["c"]


def test_decoded_task_arithmetic_scales_weights_but_averages_running_statistics(
    tmp_path: Path,
) -> None:
    """Every merge averages BatchNorm statistics (medvec.merging.combine); a secure task
    arithmetic multiplied them by lambda * N, far from the plaintext merge."""
    torch.manual_seed(0)
    vectors = [{"conv.weight": torch.randn(4, 3), "bn.running_mean": torch.randn(4)} for _ in "ab"]
    pairs = [f"{i:032x}" for i in range(2)]
    for i, tensors in enumerate(vectors):
        a, b = tmp_path / f"a{i}", tmp_path / f"b{i}"
        write_shares(tensors, META, a, b, pair_id=pairs[i], weight=1)
    sum_shares([tmp_path / "a0", tmp_path / "a1"], tmp_path / "sa")
    sum_shares([tmp_path / "b0", tmp_path / "b1"], tmp_path / "sb")
    decode_sum_to_vector(
        tmp_path / "sa", tmp_path / "sb", tmp_path / "tau", META, 0.4, stat_scale=1 / 2
    )
    tau, _ = load_vector(tmp_path / "tau")
    weights = vectors[0]["conv.weight"] + vectors[1]["conv.weight"]
    stats = (vectors[0]["bn.running_mean"] + vectors[1]["bn.running_mean"]) / 2
    assert float((tau["conv.weight"] - 0.4 * weights).abs().max()) < 1e-6
    assert float((tau["bn.running_mean"] - stats).abs().max()) < 1e-6
