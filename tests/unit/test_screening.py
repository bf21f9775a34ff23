"""Screening statistics on tiny hand-made vector files, and the outlier policy's rules."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from medvec.screening import (
    Measured,
    ScreeningPolicy,
    ScreeningStats,
    cosine_to_mean,
    layer_norms,
    measure_model,
    outlier_reasons,
)


def _file(tmp_path: Path, name: str, weight: list[float], bias: float) -> Path:
    path = tmp_path / f"{name}.safetensors"
    tensors = {
        "fc.weight": torch.tensor(weight),
        "fc.bias": torch.tensor([bias]),
        "bn.running_var": torch.tensor([100.0]),  # statistics: left out of the cosine
    }
    save_file(tensors, str(path))
    return path


def test_layer_norms_group_the_tensors_of_one_module(tmp_path: Path) -> None:
    norms = layer_norms(_file(tmp_path, "v", [3.0, 0.0], 4.0))
    assert norms == pytest.approx({"fc": 5.0, "bn": 100.0})


def test_cosine_to_the_mean_of_the_others_by_hand(tmp_path: Path) -> None:
    own = _file(tmp_path, "own", [1.0, 0.0], 0.0)
    a = _file(tmp_path, "a", [1.0, 1.0], 0.0)
    b = _file(tmp_path, "b", [1.0, -3.0], 0.0)
    # mean of the others: (1, -1, 0); own (1, 0, 0): cos = 1 / sqrt(2)
    assert cosine_to_mean(own, [a, b]) == pytest.approx(1 / math.sqrt(2))
    flipped = _file(tmp_path, "flipped", [-1.0, 0.0], 0.0)
    assert cosine_to_mean(flipped, [a, b]) == pytest.approx(-1 / math.sqrt(2))
    assert cosine_to_mean(own, []) is None
    zero = _file(tmp_path, "zero", [0.0, 0.0], 0.0)
    assert cosine_to_mean(zero, [a]) is None


def _stats(**overrides: object) -> ScreeningStats:
    fields: dict[str, object] = {
        "norm": 2.0,
        "layer_norms": {},
        "peers": 3,
        "median_peer_norm": 2.0,
        "cosine_to_peers": 0.4,
        "val": Measured(loss=0.5, accuracy=0.80, images=100),
        "base_val": Measured(loss=0.7, accuracy=0.75, images=100),
    }
    return ScreeningStats(**{**fields, **overrides})


def test_an_ordinary_vector_has_no_reason() -> None:
    assert outlier_reasons(_stats(), ScreeningPolicy()) == []


def test_each_rule_names_its_numbers() -> None:
    policy = ScreeningPolicy(norm_k=5.0, min_cosine=0.0, accuracy_margin=0.1)
    (norm,) = outlier_reasons(_stats(norm=10.5), policy)
    assert "5.2x the median 2" in norm and "3 other hospitals" in norm
    assert outlier_reasons(_stats(norm=10.0), policy) == []  # 5x exactly is allowed
    (cosine,) = outlier_reasons(_stats(cosine_to_peers=-0.01), policy)
    assert "cosine -0.010" in cosine
    peers = {"median_peer_accuracy": 0.75, "peers_measured": 3}
    (accuracy,) = outlier_reasons(
        _stats(val=Measured(loss=2, accuracy=0.6, images=100), **peers), policy
    )
    assert "0.150 below the median of 3 other hospitals' vectors 0.750" in accuracy
    assert (
        outlier_reasons(_stats(val=Measured(loss=2, accuracy=0.66, images=100), **peers), policy)
        == []
    )


def test_accuracy_is_held_against_the_peers_when_enough_were_measured() -> None:
    """The demo's finding: honest label-skewed hospitals score 0.05-0.31 below the merged
    base they start from, so with peers the rule compares with the peers' median."""
    policy = ScreeningPolicy(accuracy_margin=0.3, min_peers=2)
    skewed = Measured(loss=1.3, accuracy=0.462, images=500)
    merged_base = Measured(loss=0.6, accuracy=0.77, images=500)
    with_peers = _stats(val=skewed, base_val=merged_base, median_peer_accuracy=0.65,
                        peers_measured=4)  # fmt: skip
    assert outlier_reasons(with_peers, policy) == []
    flipped = _stats(val=Measured(loss=3, accuracy=0.30, images=500), base_val=merged_base,
                     median_peer_accuracy=0.65, peers_measured=4)  # fmt: skip
    (reason,) = outlier_reasons(flipped, policy)
    assert "0.350 below the median of 4 other hospitals' vectors 0.650" in reason
    # one measured peer is too few, and the base is no reference: the quick demo's honest
    # skewed hospitals scored 0.32-0.34 below the merged base they started from
    lonely = _stats(val=skewed, base_val=merged_base, median_peer_accuracy=0.9,
                    peers_measured=1)  # fmt: skip
    assert outlier_reasons(lonely, policy) == []


def test_the_cosine_of_one_peer_is_not_enough() -> None:
    """Two honest label-skewed vectors are nearly orthogonal (the demo measured 0.016 and
    -0.003 against a single peer), so the cosine rule waits for ``min_peers`` peers."""
    policy = ScreeningPolicy(min_cosine=0.02, min_peers=2)
    assert outlier_reasons(_stats(peers=1, cosine_to_peers=-0.003), policy) == []
    assert outlier_reasons(_stats(peers=2, cosine_to_peers=-0.003), policy) != []


def test_rules_without_what_they_compare_against_stay_silent() -> None:
    policy = ScreeningPolicy(min_peers=2)
    lonely = _stats(norm=100.0, peers=1, cosine_to_peers=None, val=None, base_val=None)
    assert outlier_reasons(lonely, policy) == []
    off = ScreeningPolicy(norm_k=None, min_cosine=None, accuracy_margin=None)
    assert outlier_reasons(_stats(norm=100.0, cosine_to_peers=-1.0), off) == []


class _Exploded(torch.nn.Module):
    """What base + a boosted update gives: NaN logits."""

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.full((images.shape[0], 3), float("nan"))


def test_a_model_that_outputs_nan_has_no_loss_but_an_accuracy() -> None:
    # PostgreSQL's JSON refuses NaN: the screening record of such a vector must not hold one
    from medvec.data import ImageArrayDataset

    images = np.zeros((4, 28, 28), dtype=np.uint8)
    measured = measure_model(_Exploded(), ImageArrayDataset(images, np.array([0, 1, 2, 0])))
    assert measured.loss is None and measured.images == 4
    assert 0.0 <= measured.accuracy <= 1.0
    json.dumps(measured.model_dump(), allow_nan=False)


def test_the_default_cosine_rule_keeps_skewed_hospitals_and_catches_noise() -> None:
    """0.016 is the least aligned honest vector the demo measured (with 6 peers), which a
    0.02 threshold quarantined; a random direction in ResNet-10's ~5 M weights scores
    about 1/sqrt(5 M) = 0.0005 either side of zero."""
    policy = ScreeningPolicy()
    assert outlier_reasons(_stats(peers=6, cosine_to_peers=0.016), policy) == []
    for noise in (0.0005, -0.0005):
        assert outlier_reasons(_stats(peers=6, cosine_to_peers=noise), policy) != []
