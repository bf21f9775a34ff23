"""Fixed-point encoding, additive shares of pre-scaled vectors, plain share sums and the
share holder's set guard."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from medvec.errors import (
    DifferencingSetError,
    SecureAggregationError,
    SetTooSmallError,
    WeightsNotAllowedError,
)
from medvec.secure import (
    FRAC_BITS,
    check_query,
    decode,
    decode_sum_to_vector,
    encode,
    exposed_members,
    split,
    sum_shares,
    write_shares,
)
from medvec.secure.encoding import max_total_weight
from medvec.secure.privacy import distributed_gaussian
from medvec.secure.shares import ShareInfo, read_share_info, read_sum_info
from medvec.vectors import VectorMetadata, load_vector

META = VectorMetadata(base_id="b", base_sha256="0" * 64, hospital="h", num_samples=7)


def test_encoding_round_trips_within_half_a_step_and_wraps_negatives() -> None:
    values = np.array([0.0, 1e-3, -1e-3, 3.5, -1234.5678, 2.0**-30])
    encoded = encode(values)
    assert encoded.dtype == np.uint64
    assert encoded[2] > 2**63  # a negative value is a large ring element
    assert np.abs(decode(encoded) - values).max() <= 2.0 ** -(FRAC_BITS + 1)


def test_encoding_refuses_values_the_ring_cannot_hold() -> None:
    with pytest.raises(SecureAggregationError):
        encode(np.array([2.0**40]))
    with pytest.raises(SecureAggregationError):
        encode(np.array([np.nan]))


def test_shares_add_up_and_each_alone_is_uniform() -> None:
    values = np.random.default_rng(0).normal(0, 0.01, 200_000)
    share_a, share_b = split(encode(values))
    np.testing.assert_allclose(decode(share_a + share_b), values, atol=2.0**-FRAC_BITS)
    counts = np.bincount((share_a >> np.uint64(60)).astype(np.int64), minlength=16)
    assert counts.min() > 0.9 * len(values) / 16  # the vector's sign bits would fill 2 cells


def test_overflow_bound_matches_the_documented_figure() -> None:
    # docs/secure-aggregation.md: at the default norm bound 1e4, sum(w) < 5.49e7
    assert max_total_weight(1.0e4) == int(2.0**63 / (1.0e4 * 2.0**FRAC_BITS)) - 1
    assert 5.4e7 < max_total_weight(1.0e4) < 5.5e7


def test_plain_sum_of_pre_scaled_shares_decodes_to_the_weighted_mean(tmp_path: Path) -> None:
    """Each hospital scales its vector by its public weight before splitting; the plain
    sum divided by the weights' sum (in its header) is the weighted mean."""
    torch.manual_seed(0)
    vectors = [{"w": torch.randn(5, 4) * 0.1, "b": torch.randn(4)} for _ in range(3)]
    weights = [5, 2, 9]
    pairs = [f"{i:032x}" for i in range(3)]
    for i, tensors in enumerate(vectors):
        a, b = tmp_path / f"a{i}", tmp_path / f"b{i}"
        write_shares(tensors, META, a, b, pair_id=pairs[i], weight=weights[i])
        assert read_share_info(a).weight == read_share_info(b).weight == weights[i]
    sum_shares([tmp_path / f"a{i}" for i in range(3)], tmp_path / "sa")
    sum_shares([tmp_path / f"b{i}" for i in range(3)], tmp_path / "sb")
    info = read_sum_info(tmp_path / "sb")
    assert info.members == pairs and info.weight == 16
    decode_sum_to_vector(tmp_path / "sa", tmp_path / "sb", tmp_path / "tau", META, 1 / 16)
    tau, _ = load_vector(tmp_path / "tau")
    expected = sum(w * v["w"] for w, v in zip(weights, vectors, strict=True)) / 16
    assert float((tau["w"] - expected).abs().max()) < 1e-6


def test_sums_over_different_members_or_weights_are_not_added(tmp_path: Path) -> None:
    tensors = {"w": torch.ones(3)}
    for i in range(2):
        a, b = tmp_path / f"a{i}", tmp_path / f"b{i}"
        write_shares(tensors, META, a, b, pair_id=f"{i:032x}", weight=1)
    sum_shares([tmp_path / "a0"], tmp_path / "sa")
    sum_shares([tmp_path / "b1"], tmp_path / "sb")
    with pytest.raises(SecureAggregationError, match="different sets"):
        decode_sum_to_vector(tmp_path / "sa", tmp_path / "sb", tmp_path / "tau", META, 1.0)
    # one vector's two shares recording different weights (a hospital's mistake)
    write_shares(tensors, META, tmp_path / "a2", tmp_path / "x", pair_id="2" * 32, weight=2)
    write_shares(tensors, META, tmp_path / "x", tmp_path / "b2", pair_id="2" * 32, weight=3)
    sum_shares([tmp_path / "a2"], tmp_path / "sa")
    sum_shares([tmp_path / "b2"], tmp_path / "sb")
    with pytest.raises(SecureAggregationError, match="other weights"):
        decode_sum_to_vector(tmp_path / "sa", tmp_path / "sb", tmp_path / "tau", META, 1.0)
    with pytest.raises(SecureAggregationError, match="twice"):  # only plain sums exist
        sum_shares([tmp_path / "a0", tmp_path / "a0"], tmp_path / "sa")


def test_a_share_written_before_public_weights_counts_as_weight_one() -> None:
    """Its header has no weight, and it encodes the vector unscaled."""
    legacy = {"role": "B", "pair_id": "1" * 32, "hospital": "h", "base_id": "b"}
    info = ShareInfo.model_validate({**legacy, "base_sha256": "0" * 64})
    assert info.weight is None and info.public_weight == 1


def test_guard_refuses_small_sets_and_one_member_differences() -> None:
    abc = {"a": 1, "b": 1, "c": 1}
    check_query([], abc, 3)
    with pytest.raises(SetTooSmallError):
        check_query([], {"a": 1, "b": 1}, 3)
    with pytest.raises(DifferencingSetError) as caught:
        check_query([abc], {**abc, "d": 1}, 3)
    assert caught.value.detail["exposed"] == ["d"]
    with pytest.raises(DifferencingSetError):  # removing one member is the same leak
        check_query([{**abc, "d": 1}], abc, 3)
    check_query([abc], abc, 3)  # the same set again adds nothing
    check_query([abc], {**abc, "d": 1, "e": 1}, 3)  # two new members: only their sum


def test_guard_sees_differences_spread_over_several_sums() -> None:
    history = [{"a": 1, "b": 1, "c": 1}, {"d": 1, "e": 1, "f": 1}]
    with pytest.raises(DifferencingSetError) as caught:
        check_query(history, dict.fromkeys("abcdefg", 1), 3)
    assert caught.value.detail["exposed"] == ["g"]
    # only plain sums: a changed weight would isolate that member (and any unequal
    # integer weights expose each vector modulo some number)
    with pytest.raises(WeightsNotAllowedError):
        check_query([{"a": 1, "b": 1, "c": 1}], {"a": 1, "b": 1, "c": 2}, 3)
    assert exposed_members([{"a": 2, "b": 2}, {"a": 1, "b": 1}]) == []


def test_distributed_noise_is_sigma_c_over_root_k() -> None:
    tensors = {"w": torch.zeros(400_000)}
    noisy, record = distributed_gaussian(tensors, noise_multiplier=0.5, clip=2.0, k=4, delta=1e-5)
    assert float(noisy["w"].std()) == pytest.approx(0.5 * 2.0 / 2, rel=0.01)
    assert record["noise_std"] == pytest.approx(0.5) and record["secure_k"] == 4
    assert record["epsilon"] > 0 and "at least 4 honest hospitals" in record["guarantee"]
