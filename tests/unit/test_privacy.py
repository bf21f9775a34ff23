"""Clipping, Gaussian noise and privacy accounting against independent computations."""

from __future__ import annotations

import inspect
import json
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from medvec.errors import PrivacyError
from medvec.privacy import (
    add_gaussian_noise,
    clip_by_l2,
    dp_sgd_epsilon,
    gaussian_delta,
    gaussian_epsilon,
    l2_norm,
)
from medvec.vectors import VectorMetadata


def _vector(seed: int = 0, scale: float = 1.0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "conv.weight": torch.randn(64, 3, 3, 3, generator=g) * scale,
        "fc.weight": torch.randn(10, 512, generator=g) * scale,
        "fc.bias": torch.randn(10, generator=g) * scale,
    }


def _norm64(tensors: Mapping[str, torch.Tensor]) -> float:
    return math.sqrt(sum(float((t.double() ** 2).sum()) for t in tensors.values()))


def test_clip_bound_holds_and_direction_is_kept() -> None:
    vector = _vector(scale=3.0)
    assert _norm64(vector) > 10
    clipped = clip_by_l2(vector, 0.5)
    assert _norm64(clipped) <= 0.5 * (1 + 1e-6)
    assert _norm64(clipped) == pytest.approx(0.5, rel=1e-6)
    ratio = float(clipped["fc.weight"][0, 0] / vector["fc.weight"][0, 0])
    for key in vector:  # one global scale, not one per tensor
        assert torch.allclose(clipped[key], vector[key] * ratio, rtol=1e-5, atol=1e-8)
    assert l2_norm(clipped) == pytest.approx(_norm64(clipped))


def test_clip_leaves_small_vectors_and_integer_tensors_alone() -> None:
    vector = _vector(scale=1e-4)
    vector["num_batches_tracked"] = torch.tensor(7)
    clipped = clip_by_l2(vector, 100.0)
    assert all(torch.equal(clipped[k], vector[k]) for k in vector)
    big = clip_by_l2({"w": torch.full((4,), 10.0), "n": torch.tensor(3)}, 1.0)
    assert torch.equal(big["n"], torch.tensor(3)) and _norm64({"w": big["w"]}) == pytest.approx(1)
    as_list = clip_by_l2([torch.full((4,), 10.0)], 2.0)
    assert isinstance(as_list, list) and float(as_list[0].norm()) == pytest.approx(2.0)
    with pytest.raises(PrivacyError, match="must be > 0"):
        clip_by_l2(vector, 0.0)


def test_noise_is_gaussian_with_std_sigma_times_clip() -> None:
    clip, sigma = 0.05, 0.5
    zeros = {"a": torch.zeros(600_000), "b": torch.zeros(300, 1000)}
    noisy = add_gaussian_noise(zeros, sigma * clip)
    noise = torch.cat([t.flatten() for t in noisy.values()]).double() / (sigma * clip)
    # 900k samples: the std estimate is within ~0.2% (4 standard errors), the mean near 0
    assert float(noise.std()) == pytest.approx(1.0, rel=5e-3)
    assert abs(float(noise.mean())) < 4 / math.sqrt(noise.numel())
    # the shape of N(0, 1), not only its moments: P(|Z| < 1), P(|Z| < 2), P(|Z| < 3)
    for k, mass in ((1, 0.682689), (2, 0.954500), (3, 0.997300)):
        assert float((noise.abs() < k).double().mean()) == pytest.approx(mass, abs=3e-3)
    assert torch.equal(add_gaussian_noise({"n": torch.tensor(3)}, 1.0)["n"], torch.tensor(3))


def test_noise_comes_from_the_os_and_no_seed_repeats_it() -> None:
    """Nothing a vector records, nor torch's global seed, regenerates its noise: two draws
    after the same ``torch.manual_seed`` share nothing (DESIGN: never recorded as a seed)."""
    zeros = {"w": torch.zeros(100_000)}
    draws = []
    for _ in range(2):
        torch.manual_seed(0)
        draws.append(add_gaussian_noise(zeros, 1.0)["w"].double())
    correlation = float(torch.corrcoef(torch.stack(draws))[0, 1])
    assert abs(correlation) < 0.02  # independent: |r| ~ 1/sqrt(n) = 0.003
    assert "seed" not in inspect.signature(add_gaussian_noise).parameters


def _delta_by_integration(noise_multiplier: float, epsilon: float) -> float:
    """delta(eps) = E[(1 - e^(eps - L))_+], L ~ N(mu^2/2, mu^2), mu = 1/sigma: the privacy
    loss of the Gaussian mechanism (Dong, Roth & Su 2019), integrated numerically."""
    mu = 1.0 / noise_multiplier
    grid = np.linspace(mu * mu / 2 - 40 * mu, mu * mu / 2 + 40 * mu, 2_000_001)
    density = np.exp(-((grid - mu * mu / 2) ** 2) / (2 * mu * mu)) / (mu * math.sqrt(2 * math.pi))
    integrand = np.clip(1 - np.exp(np.minimum(epsilon - grid, 50.0)), 0, None) * density
    return float(np.trapezoid(integrand, grid))


@pytest.mark.parametrize("sigma", [0.5, 1.0, 2.0, 5.0])
def test_gaussian_epsilon_matches_privacy_loss_integral(sigma: float) -> None:
    delta = 1e-5
    eps = gaussian_epsilon(sigma, delta)
    assert _delta_by_integration(sigma, eps) == pytest.approx(delta, rel=1e-3)
    assert gaussian_delta(sigma, eps) == pytest.approx(delta, rel=1e-6)


def test_gaussian_epsilon_is_tighter_than_the_classic_bound() -> None:
    """Classic (Dwork & Roth 2014, Thm A.1): sigma = sqrt(2 ln(1.25/delta)) / eps for eps < 1."""
    delta = 1e-5
    for eps_classic in (0.2, 0.5, 0.9):
        sigma = math.sqrt(2 * math.log(1.25 / delta)) / eps_classic
        assert gaussian_epsilon(sigma, delta) < eps_classic
    values = [gaussian_epsilon(s, delta) for s in (0.5, 1, 2, 4, 8)]
    assert values == sorted(values, reverse=True)
    with pytest.raises(PrivacyError):
        gaussian_epsilon(0.0, delta)


def _rdp_integer_order(q: float, sigma: float, alpha: int) -> float:
    """RDP of the Poisson-subsampled Gaussian at integer order alpha (Mironov, Talwar & Zhang
    2019, Sec. 3.3):

        log(sum_k C(alpha,k) (1-q)^(alpha-k) q^k exp((k^2-k)/(2 sigma^2))) / (alpha-1)
    """
    terms = [
        math.lgamma(alpha + 1)
        - math.lgamma(k + 1)
        - math.lgamma(alpha - k + 1)
        + (alpha - k) * math.log1p(-q)
        + k * math.log(q)
        + (k * k - k) / (2 * sigma * sigma)
        for k in range(alpha + 1)
    ]
    top = max(terms)
    return (top + math.log(sum(math.exp(t - top) for t in terms))) / (alpha - 1)


def _epsilon_from_rdp(q: float, sigma: float, steps: int, delta: float) -> float:
    """Conversion of Balle et al. 2020 (Thm 21), minimised over integer orders 2..64."""
    return min(
        steps * _rdp_integer_order(q, sigma, a)
        + math.log((a - 1) / a)
        - (math.log(delta) + math.log(a)) / (a - 1)
        for a in range(2, 65)
    )


@pytest.mark.parametrize(
    ("sigma", "q", "steps"), [(4.0, 0.01, 10_000), (1.1, 256 / 60_000, 14_062), (1.0, 0.05, 500)]
)
def test_dp_sgd_epsilon_matches_independent_rdp(sigma: float, q: float, steps: int) -> None:
    ours = dp_sgd_epsilon(sigma, q, steps, 1e-5, orders=list(range(2, 65)))
    assert ours == pytest.approx(_epsilon_from_rdp(q, sigma, steps, 1e-5), rel=1e-6)
    # the default orders include fractional ones: never looser
    assert dp_sgd_epsilon(sigma, q, steps, 1e-5) <= ours * (1 + 1e-9)


def test_dp_sgd_epsilon_against_abadi_et_al() -> None:
    """Abadi et al., "Deep Learning with Differential Privacy" (CCS 2016), Sec. 3.1: q = 0.01,
    sigma = 4, delta = 1e-5, T = 10,000 steps gives epsilon ~ 1.26 with the moments accountant.
    The RDP accountant with the tighter conversion must agree in size and never be looser."""
    eps = dp_sgd_epsilon(4.0, 0.01, 10_000, 1e-5)
    assert 0.9 < eps <= 1.26


def test_dp_sgd_epsilon_edges() -> None:
    assert dp_sgd_epsilon(1.0, 0.01, 0, 1e-5) == 0.0
    assert dp_sgd_epsilon(1.0, 0.01, 2000, 1e-5) > dp_sgd_epsilon(1.0, 0.01, 1000, 1e-5)
    with pytest.raises(PrivacyError, match="sample rate"):
        dp_sgd_epsilon(1.0, 1.5, 10, 1e-5)


def test_accountant_history_reads_every_kind_of_vector() -> None:
    from medvec.privacy import accountant_history

    dp_sgd = {"dp_sgd": True, "dp_noise": 1.0, "sample_rate": 0.01, "steps": 50}
    assert accountant_history(dp_sgd) == [(1.0, 0.01, 50)]
    with_history = {**dp_sgd, "history": [[1.0, 0.01, 30], [0.8, 0.02, 20]]}
    assert accountant_history(with_history) == [(1.0, 0.01, 30), (0.8, 0.02, 20)]
    assert accountant_history({"dp_sgd": False, "dp_clip": 1.0, "dp_noise": 3.0}) == [(3.0, 1.0, 1)]
    assert accountant_history({"dp_sgd": False, "dp_clip": 1.0}) is None
    assert accountant_history({}) is None


def test_composing_one_release_gives_its_own_epsilon() -> None:
    from medvec.privacy import compose_epsilon, dp_sgd_epsilon

    assert compose_epsilon([(1.1, 0.02, 300)], 1e-5) == pytest.approx(
        dp_sgd_epsilon(1.1, 0.02, 300, 1e-5)
    )
    assert compose_epsilon([], 1e-5) == 0.0
    twice = compose_epsilon([(1.1, 0.02, 300), (1.1, 0.02, 300)], 1e-5)
    assert twice == pytest.approx(compose_epsilon([(1.1, 0.02, 600)], 1e-5))
    with pytest.raises(PrivacyError):
        compose_epsilon([(1.0, 0.1, 1)], 0.0)


#: what each writer of a vector puts in ``privacy``: clipping only, output noise
#: (`medvec train --dp-noise`), DP-SGD (`--dp-sgd`), distributed noise (`push --secure`)
GOOD_RECORDS = [
    {},
    {"dp_sgd": False, "dp_clip": 1.0},
    {"dp_sgd": False, "dp_clip": 2.0, "dp_noise": 0.5, "noise_std": 1.0, "delta": 1e-5,
     "epsilon": 9.6, "accountant": "gaussian"},
    {"dp_sgd": True, "dp_clip": 1.0, "dp_noise": 1.1, "sample_rate": 0.02, "steps": 300,
     "epsilon": 0.9, "delta": 1e-5, "accountant": "rdp", "history": [[1.1, 0.02, 300]],
     "batchnorm": "frozen"},
    {"dp_sgd": True, "dp_clip": 1.0, "dp_noise": 1.0, "sample_rate": 0.01, "steps": 50},
]  # fmt: skip

#: the values of issue 22 that broke the registry's pages, and their kin
BAD_RECORDS = [
    ({"dp_clip": 1.0, "dp_noise": "abc"}, "privacy.dp_noise", "valid number"),
    ({"dp_sgd": True, "history": [[1, 1.5, 1]]}, "privacy.history.0.1", "less than or equal to 1"),
    ({"dp_sgd": True, "history": [[1, 1]]}, "privacy.history.0", "[noise multiplier, sample"),
    ({"dp_sgd": True, "history": [[1, 0.5, 2.5]]}, "privacy.history.0.2", "valid integer"),
    ({"dp_sgd": True, "history": [[0, 0.5, 2]]}, "privacy.history.0.0", "greater than 0"),
    ({"delta": "x"}, "privacy.delta", "valid number"),
    ({"delta": 2}, "privacy.delta", "less than 1"),
    ({"delta": 0}, "privacy.delta", "greater than 0"),
    ({"dp_clip": 1.0, "dp_noise": [1]}, "privacy.dp_noise", "valid number"),
    ({"dp_clip": 1.0, "dp_noise": float("nan")}, "privacy.dp_noise", "finite"),
    ({"dp_clip": -1.0}, "privacy.dp_clip", "greater than 0"),
    ({"epsilon": "small"}, "privacy.epsilon", "valid number"),
    ({"dp_sgd": "yes"}, "privacy.dp_sgd", "valid boolean"),
    ({"dp_sgd": True, "dp_clip": 1.0, "dp_noise": 1.0, "sample_rate": 0.01, "steps": "50"},
     "privacy.steps", "integer"),
    ({"dp_clip": 1.0, "dp_noise": 1.0, "seed": 0}, "privacy.seed", "Extra inputs"),
    ({"dp_noise": 1.0}, "privacy", "dp_clip"),
    ({"dp_sgd": True}, "privacy", "history"),
    ({"dp_sgd": False, "history": [[1, 0.5, 2]]}, "privacy", "dp_sgd"),
    ({"mechanism": "distributed_gaussian", "dp_clip": 1.0, "dp_noise": 1.0}, "privacy", "secure_k"),
]  # fmt: skip


def _metadata(privacy: object) -> VectorMetadata:
    return VectorMetadata.model_validate(
        {"base_id": "b", "base_sha256": "0" * 64, "hospital": "h", "num_samples": 1,
         "privacy": privacy}
    )  # fmt: skip


@pytest.mark.parametrize("record", GOOD_RECORDS)
def test_every_record_medvec_writes_is_a_valid_privacy_record(record: dict[str, Any]) -> None:
    stored = json.loads(_metadata(record).model_dump_json())["privacy"]
    assert stored == record
    assert _metadata(stored).privacy == _metadata(record).privacy


def test_the_distributed_noise_record_is_a_valid_privacy_record() -> None:
    from medvec.secure.privacy import distributed_gaussian

    _, record = distributed_gaussian(
        {"w": torch.zeros(10)}, noise_multiplier=1.0, clip=1.0, k=3, delta=1e-5
    )
    assert json.loads(_metadata(record).model_dump_json())["privacy"] == record


@pytest.mark.parametrize(("record", "where", "message"), BAD_RECORDS)
def test_a_malformed_privacy_record_is_refused_with_where_and_why(
    record: dict[str, Any], where: str, message: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        _metadata(record)
    error = caught.value.errors()[0]
    assert ".".join(str(p) for p in error["loc"]) == where
    assert message in error["msg"]


def test_a_dp_sgd_record_without_a_noisy_step_gives_no_guarantee() -> None:
    """Zero steps claims that no noisy step was taken, yet the vector moved: nothing
    accounts what it reveals, so it counts as a vector without noise (unbounded)."""
    from medvec.privacy import accountant_history

    assert accountant_history({"dp_sgd": True, "history": [[1.0, 1.0, 0]]}) is None
    legacy = {"dp_sgd": True, "dp_noise": 1.0, "sample_rate": 0.01, "steps": 0}
    assert accountant_history(legacy) is None
    mixed = {"dp_sgd": True, "history": [[1.0, 0.5, 0], [1.0, 0.5, 3]]}
    assert accountant_history(mixed) == [(1.0, 0.5, 0), (1.0, 0.5, 3)]
