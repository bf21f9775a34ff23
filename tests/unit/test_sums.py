"""Running sums (``medvec.merging.sums``): updates in O(one vector) equal the full merge."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from medvec.errors import MergeError
from medvec.merging import merge_files
from medvec.merging.sums import (
    Share,
    build_sums,
    compare_sums,
    merge_from_sums,
    read_sums_header,
    update_sums,
)
from medvec.models import load_model_file
from tests.unit.test_tuning import _base_state, _files, _vectors


def _assert_same_model(a: Path, b: Path) -> None:
    left, _ = load_model_file(a)
    right, _ = load_model_file(b)
    for key, value in right.state_dict().items():
        got = left.state_dict()[key]
        if value.is_floating_point():
            scale = float(value.abs().max()) or 1.0
            assert float((got - value).abs().max()) / scale < 1e-5, key
        else:
            assert torch.equal(got, value), key


@pytest.fixture
def world(tmp_path: Path) -> tuple[Path, list[Path], list[float]]:
    base = _base_state()
    base_path, paths = _files(tmp_path, base, _vectors(base, 5))
    return base_path, paths, [5.0, 6.0, 7.0, 8.0, 9.0]


def test_replacing_a_vector_equals_the_full_merge_and_the_full_recompute(
    world: tuple[Path, list[Path], list[float]], tmp_path: Path
) -> None:
    base, paths, weights = world
    shares = [
        Share(f"v{i}", p, w) for i, (p, w) in enumerate(zip(paths[:3], weights, strict=False))
    ]
    sums = tmp_path / "sums-0.safetensors"
    header = build_sums(base, shares, sums)
    assert header.members == {"v0": 5.0, "v1": 6.0, "v2": 7.0} and header.total_weight == 18.0

    # hospital 1 pushes a new vector (paths[3], weight 8) in place of v1
    update = update_sums(
        base,
        sums,
        tmp_path / "sums-1.safetensors",
        remove=[shares[1]],
        add=[Share("v3", paths[3], 8.0)],
        merged_path=tmp_path / "through-sums.safetensors",
    )
    assert update.header.members == {"v0": 5.0, "v2": 7.0, "v3": 8.0}
    full = merge_files(
        base,
        [paths[0], paths[2], paths[3]],
        tmp_path / "full.safetensors",
        strategy="weighted_mean",
        weights=[5.0, 7.0, 8.0],
    )
    assert update.merged is not None
    _assert_same_model(update.merged.path, full.path)

    recomputed = tmp_path / "sums-full.safetensors"
    build_sums(
        base,
        [shares[0], shares[2], Share("v3", paths[3], 8.0)],
        recomputed,
    )
    assert compare_sums(tmp_path / "sums-1.safetensors", recomputed) < 1e-12
    assert compare_sums(sums, recomputed) == float("inf")  # other members
    assert read_sums_header(sums).members == header.members  # the old file is untouched


def test_task_arithmetic_and_leave_one_out_come_from_the_sums(
    world: tuple[Path, list[Path], list[float]], tmp_path: Path
) -> None:
    base, paths, _ = world
    shares = [Share(f"v{i}", p, 1.0) for i, p in enumerate(paths)]
    sums = tmp_path / "sums.safetensors"
    build_sums(base, shares, sums)

    ta = merge_from_sums(
        base, sums, tmp_path / "ta.safetensors", strategy="task_arithmetic", params={"lambda": 0.3}
    )
    full = merge_files(
        base,
        paths,
        tmp_path / "ta-full.safetensors",
        strategy="task_arithmetic",
        params={"lambda": 0.3},
    )
    _assert_same_model(ta.path, full.path)

    without = merge_from_sums(base, sums, tmp_path / "loo.safetensors", without=shares[2])
    others = [p for i, p in enumerate(paths) if i != 2]
    expected = merge_files(
        base, others, tmp_path / "loo-full.safetensors", strategy="weighted_mean", weights=[1.0] * 4
    )
    _assert_same_model(without.path, expected.path)
    assert without.num_vectors == 4


def test_a_removed_hospital_is_subtracted_and_bad_updates_change_nothing(
    world: tuple[Path, list[Path], list[float]], tmp_path: Path
) -> None:
    base, paths, weights = world
    shares = [Share(f"v{i}", p, w) for i, (p, w) in enumerate(zip(paths, weights, strict=True))]
    sums = tmp_path / "sums.safetensors"
    build_sums(base, shares, sums)
    before = sums.read_bytes()

    for bad in (
        {"remove": [Share("v9", paths[0], 5.0)]},  # not a member
        {"remove": [Share("v0", paths[0], 4.0)]},  # another weight than it was added with
        {"add": [Share("v1", paths[1], 6.0)]},  # already a member
    ):
        with pytest.raises(MergeError):
            update_sums(base, sums, tmp_path / "bad.safetensors", **bad)  # type: ignore[arg-type]
        assert not (tmp_path / "bad.safetensors").exists()
    with pytest.raises(MergeError, match="not linear"):
        merge_from_sums(base, sums, tmp_path / "ties.safetensors", strategy="ties")
    assert sums.read_bytes() == before

    update_sums(base, sums, tmp_path / "left.safetensors", remove=[shares[4]])
    rebuilt = tmp_path / "rebuilt.safetensors"
    build_sums(base, shares[:4], rebuilt)
    assert compare_sums(tmp_path / "left.safetensors", rebuilt) < 1e-12
