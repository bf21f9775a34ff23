"""medvec.merging strategies and kernels on small crafted tensors with known answers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pytest
import torch

from medvec.errors import MergeError
from medvec.merging import (
    get_strategy,
    list_strategies,
    merge_state_dicts,
    staleness_weights,
)
from medvec.merging.masks import (
    RANDOM_BLOCK,
    coordinate_median,
    magnitude_threshold,
    random_keep_mask,
)
from medvec.merging.registry import build_registry
from medvec.merging.weighted_mean import WeightedMean
from medvec.vectors import is_running_stat

BASE = {"w": torch.zeros(4), "steps": torch.tensor(7)}


def _vectors(*rows: Sequence[float]) -> list[dict[str, torch.Tensor]]:
    return [{"w": torch.tensor(row, dtype=torch.float32)} for row in rows]


def _merge(
    strategy: str,
    *rows: Sequence[float],
    params: Mapping[str, object] | None = None,
    weights: Sequence[float] | None = None,
    seed: int = 0,
    num_samples: Sequence[int] | None = None,
) -> torch.Tensor:
    merged = merge_state_dicts(
        BASE,
        _vectors(*rows),
        strategy=strategy,
        params=params,
        weights=weights,
        seed=seed,
        num_samples=num_samples,
    )
    assert torch.equal(merged["steps"], BASE["steps"])  # integer buffers come from the base
    return merged["w"]


def test_registry_lists_every_strategy_and_rejects_duplicates() -> None:
    assert list_strategies() == [
        "weighted_mean",
        "task_arithmetic",
        "ties",
        "dare",
        "median",
        "trimmed_mean",
    ]
    with pytest.raises(MergeError, match="registered twice"):
        build_registry([WeightedMean(), WeightedMean()])
    with pytest.raises(MergeError, match="unknown merge strategy 'fedprox'") as info:
        get_strategy("fedprox")
    assert "weighted_mean" in str(info.value)


# -- weighted mean and task arithmetic -------------------------------------


def test_weighted_mean_of_identical_vectors_is_that_vector() -> None:
    row = [0.5, -1.25, 3.0, 1e-3]
    merged = _merge("weighted_mean", row, row, row, weights=[1.0, 5.0, 0.5])
    torch.testing.assert_close(merged, torch.tensor(row), rtol=1e-6, atol=0)


def test_weighted_mean_uses_sample_counts_by_default() -> None:
    merged = _merge("weighted_mean", [0.0] * 4, [4.0] * 4, num_samples=[10, 30])
    torch.testing.assert_close(merged, torch.full((4,), 3.0))
    uniform = _merge("weighted_mean", [0.0] * 4, [4.0] * 4)
    torch.testing.assert_close(uniform, torch.full((4,), 2.0))


def test_task_arithmetic_is_lambda_times_the_sum() -> None:
    merged = _merge("task_arithmetic", [1, 2, 0, 0], [3, 4, 0, -2], params={"lambda": 0.5})
    torch.testing.assert_close(merged, torch.tensor([2.0, 3.0, 0.0, -1.0]))
    weighted = _merge("task_arithmetic", [1, 1, 1, 1], [1, 1, 1, 1], weights=[2, 1])
    torch.testing.assert_close(weighted, torch.full((4,), 3.0))


# -- TIES ------------------------------------------------------------------


def test_ties_elects_sign_then_takes_the_disjoint_mean() -> None:
    # sums per coordinate: -1, 0 (tie -> +), 1, 5
    rows = ([1, -2, 3, 0], [2, 1, -1, 0], [-4, 1, -1, 5])
    merged = _merge("ties", *rows, params={"density": 1.0})
    torch.testing.assert_close(merged, torch.tensor([-4.0, 1.0, 3.0, 5.0]))
    scaled = _merge("ties", *rows, params={"density": 1.0, "lambda": 0.5})
    torch.testing.assert_close(scaled, torch.tensor([-2.0, 0.5, 1.5, 2.5]))


def test_ties_trims_each_vector_to_its_top_magnitudes() -> None:
    alone = _merge("ties", [0.1, -5.0, 0.2, 3.0], params={"density": 0.5})
    torch.testing.assert_close(alone, torch.tensor([0.0, -5.0, 0.0, 3.0]))
    # trimmed: [4, -1, 0, 0] and [-3, 2, 0, 0]; elected signs +, +
    merged = _merge("ties", [4, -1, 0.5, 0.1], [-3, 2, 0.2, -0.1], params={"density": 0.5})
    torch.testing.assert_close(merged, torch.tensor([4.0, 2.0, 0.0, 0.0]))


def test_magnitude_threshold_keeps_ceil_density_entries() -> None:
    values = np.array([0.5, -4.0, 3.0, -1.0, 2.0], dtype=np.float32)
    assert magnitude_threshold(values, 0.4) == 3.0
    assert magnitude_threshold(values, 0.5) == 2.0  # ceil(2.5) = 3 kept
    assert magnitude_threshold(values, 1.0) == 0.0


# -- DARE ------------------------------------------------------------------


def test_dare_drops_and_rescales_so_the_expectation_is_kept() -> None:
    row = [1.0, -2.0, 3.0, 0.5]
    runs = torch.stack(
        [_merge("dare", row, params={"drop_rate": 0.5}, seed=seed) for seed in range(400)]
    )
    kept = runs != 0
    assert set(runs[kept].abs().unique().tolist()) <= {2.0, 4.0, 6.0, 1.0}  # x / (1 - p)
    assert 0.4 < kept.float().mean() < 0.6
    torch.testing.assert_close(runs.mean(dim=0), torch.tensor(row), atol=0.35, rtol=0)


def test_dare_is_deterministic_per_seed() -> None:
    rows = ([1.0, 2.0, 3.0, 4.0], [4.0, 3.0, 2.0, 1.0])
    first = _merge("dare", *rows, params={"drop_rate": 0.5}, seed=3)
    assert torch.equal(first, _merge("dare", *rows, params={"drop_rate": 0.5}, seed=3))
    others = [_merge("dare", *rows, params={"drop_rate": 0.5}, seed=s) for s in range(4, 9)]
    assert any(not torch.equal(first, other) for other in others)


def test_random_mask_does_not_depend_on_chunking() -> None:
    numel = 3 * RANDOM_BLOCK + 17
    whole = random_keep_mask(5, "layer.weight", 2, 0, numel, 0.3)
    parts = np.concatenate(
        [
            random_keep_mask(5, "layer.weight", 2, 0, 1000, 0.3),
            random_keep_mask(5, "layer.weight", 2, 1000, RANDOM_BLOCK * 2, 0.3),
            random_keep_mask(
                5, "layer.weight", 2, 1000 + RANDOM_BLOCK * 2, numel - 1000 - RANDOM_BLOCK * 2, 0.3
            ),
        ]
    )
    assert np.array_equal(whole, parts)
    assert not np.array_equal(whole, random_keep_mask(5, "layer.weight", 3, 0, numel, 0.3))
    assert 0.28 < whole.mean() < 0.32


# -- median and trimmed mean -----------------------------------------------


def test_median_ignores_one_huge_outlier() -> None:
    merged = _merge(
        "median", [1, 1, 1, 1], [2, 2, 2, 2], [3, 3, 3, 3], [1e9, -1e9, 1e9, 1e9], [0, 0, 0, 0]
    )
    torch.testing.assert_close(merged, torch.tensor([2.0, 1.0, 2.0, 2.0]))


def test_median_of_an_even_count_is_the_mean_of_the_middle_two() -> None:
    merged = _merge("median", [1, 0, 0, 0], [2, 0, 0, 0], [3, 0, 0, 0], [100, 0, 0, 0])
    assert float(merged[0]) == 2.5
    values = torch.randn(6, 1000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    expected = np.median(values.numpy(), axis=0)
    np.testing.assert_allclose(coordinate_median(values.numpy()), expected, rtol=0, atol=0)


def test_trimmed_mean_cuts_both_tails() -> None:
    rows = ([1, 0, 0, 0], [2, 0, 0, 0], [3, 0, 0, 0], [4, 0, 0, 0], [100, -50, 0, 0])
    merged = _merge("trimmed_mean", *rows, params={"trim_fraction": 0.2})
    torch.testing.assert_close(merged, torch.tensor([3.0, 0.0, 0.0, 0.0]))
    plain = _merge("trimmed_mean", *rows, params={"trim_fraction": 0.0})
    torch.testing.assert_close(plain, torch.tensor([22.0, -10.0, 0.0, 0.0]))


# -- bad input -------------------------------------------------------------


def test_weights_count_must_match_the_vectors() -> None:
    with pytest.raises(MergeError, match="3 weights given for 2 vectors"):
        _merge("weighted_mean", [1] * 4, [2] * 4, weights=[1, 2, 3])
    with pytest.raises(MergeError, match=">= 0"):
        _merge("weighted_mean", [1] * 4, [2] * 4, weights=[1, -2])
    with pytest.raises(MergeError, match="all weights are zero"):
        _merge("weighted_mean", [1] * 4, [2] * 4, weights=[0, 0])
    with pytest.raises(MergeError, match="median does not use weights"):
        _merge("median", [1] * 4, [2] * 4, weights=[1, 2])


def test_parameters_are_checked() -> None:
    with pytest.raises(MergeError, match="density"):
        _merge("ties", [1] * 4, params={"density": 0.0})
    with pytest.raises(MergeError, match="drop_rate"):
        _merge("dare", [1] * 4, params={"drop_rate": 1.0})
    with pytest.raises(MergeError, match="ties takes: density, lambda"):
        _merge("ties", [1] * 4, params={"alpha": 1})
    with pytest.raises(MergeError, match="trim_fraction"):
        _merge("trimmed_mean", [1] * 4, params={"trim_fraction": 0.5})


def test_vectors_must_match_the_base() -> None:
    with pytest.raises(MergeError, match="no vectors"):
        merge_state_dicts(BASE, [], strategy="median")
    with pytest.raises(MergeError, match="shape"):
        merge_state_dicts(BASE, [{"w": torch.zeros(3)}], strategy="median")
    with pytest.raises(MergeError, match="missing"):
        merge_state_dicts(BASE, [{"v": torch.zeros(4)}], strategy="median")


def test_staleness_weights() -> None:
    assert staleness_weights([0, 1, 3], 0.5) == pytest.approx([1.0, 2**-0.5, 0.5])
    assert staleness_weights([0, 4], 0.0) == [1.0, 1.0]
    with pytest.raises(MergeError):
        staleness_weights([-1], 0.5)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_results_are_refused(bad: float) -> None:
    with pytest.raises(MergeError, match="NaN or infinite"):
        _merge("weighted_mean", [1.0, bad, 0.0, 0.0])


# -- BatchNorm running statistics ------------------------------------------

BN_BASE = {
    "w": torch.zeros(4),
    "bn.running_mean": torch.zeros(2),
    "bn.running_var": torch.ones(2),
    "bn.num_batches_tracked": torch.tensor(7),
}
# dyadic values and weights summing to a power of two: every answer below is exact
BN_VECTORS = [
    {"w": w, "bn.running_mean": m, "bn.running_var": v}
    for w, m, v in zip(
        torch.tensor([[1, -2, 0.5, 0], [2, 1, -4, 0.25], [-1, 3, 0.5, 0.25], [0.5, 0.25, -1, 2]]),
        torch.tensor([[1.0, -2.0], [3.0, 0.0], [0.0, 4.0], [0.5, 10.0]]),
        torch.tensor([[0.5, 1.0], [-0.5, 0.25], [0.25, -0.5], [1.0, 0.5]]),
        strict=True,
    )
]
UNIFORM_MEAN = ([1.125, 3.0], [1.3125, 1.3125])  # running mean, running var (base 1 added)
WEIGHTED_MEAN = ([0.8125, 6.5], [1.65625, 1.40625])  # weights 1, 1, 1, 5 (sum 8)


@pytest.mark.parametrize(
    ("strategy", "kwargs", "weights_result", "stats"),
    [
        # TIES, density 0.5: trimmed rows [1,-2,0,0] [2,0,-4,0] [-1,3,0,0] [0,0,-1,2];
        # elected signs + + - +; disjoint means 1.5, 3, -2.5, 2
        ("ties", {"params": {"density": 0.5}}, [1.5, 3.0, -2.5, 2.0], UNIFORM_MEAN),
        # 3 * (v0 + v1 + v2 + v3)
        ("task_arithmetic", {"params": {"lambda": 3.0}}, [7.5, 6.75, -12.0, 7.5], UNIFORM_MEAN),
        # 3 * (v0 + v1 + v2 + 5 v3)
        (
            "task_arithmetic",
            {"params": {"lambda": 3.0}, "weights": [1, 1, 1, 5]},
            [13.5, 9.75, -24.0, 31.5],
            WEIGHTED_MEAN,
        ),
        # mean of the two middle values of each column
        ("median", {}, [0.75, 0.625, -0.25, 0.25], UNIFORM_MEAN),
    ],
)
def test_running_statistics_are_the_weighted_mean_whatever_the_strategy(
    strategy: str,
    kwargs: dict[str, object],
    weights_result: list[float],
    stats: tuple[list[float], list[float]],
) -> None:
    merged = merge_state_dicts(BN_BASE, BN_VECTORS, strategy=strategy, **kwargs)  # type: ignore[arg-type]
    assert torch.equal(merged["w"], torch.tensor(weights_result))
    assert torch.equal(merged["bn.running_mean"], torch.tensor(stats[0]))
    assert torch.equal(merged["bn.running_var"], torch.tensor(stats[1]))
    assert torch.equal(merged["bn.num_batches_tracked"], torch.tensor(7))


def test_dare_drops_weights_but_averages_running_statistics() -> None:
    params = {"drop_rate": 0.5, "lambda": 2.0}
    merged = merge_state_dicts(BN_BASE, BN_VECTORS, strategy="dare", params=params, seed=3)
    weights_only = merge_state_dicts(
        {"w": BN_BASE["w"]},
        [{"w": v["w"]} for v in BN_VECTORS],
        strategy="dare",
        params=params,
        seed=3,
    )
    assert torch.equal(merged["w"], weights_only["w"])  # the strategy's own result
    assert torch.equal(merged["bn.running_mean"], torch.tensor(UNIFORM_MEAN[0]))
    assert torch.equal(merged["bn.running_var"], torch.tensor(UNIFORM_MEAN[1]))


def test_is_running_stat_names_only_running_means_and_variances() -> None:
    assert is_running_stat("layer1.0.bn1.running_mean")
    assert is_running_stat("bn.running_var")
    assert is_running_stat("running_mean")
    for key in ("bn.weight", "bn.bias", "bn.num_batches_tracked", "fc.running_mean_weight"):
        assert not is_running_stat(key)
