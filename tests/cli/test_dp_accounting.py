"""The privacy accountants behind `medvec train` against published values.

DP-SGD (`--dp-sgd`): TensorFlow Privacy's MNIST tutorial (tensorflow/privacy,
tutorials/README.md, "Select Parameters") publishes epsilon at delta = 1e-5 for
60,000 examples, batches of 256 and these noise multipliers and epochs. It used the
RDP accountant of the sampled Gaussian mechanism (Mironov, Talwar, Zhang 2019,
"Renyi Differential Privacy of the Sampled Gaussian Mechanism", Sec. 3.3: for an
integer order a, A_a = sum_k C(a, k) (1-q)^(a-k) q^k exp((k^2 - k) / (2 sigma^2)) and the
RDP is log(A_a) / (a - 1) per step) with the classic conversion
eps = min_a RDP(a) + log(1/delta) / (a - 1). The test recomputes that curve
independently, checks it reproduces the published figures, and checks that
``dp_sgd_epsilon`` is the tighter conversion of Balle et al. (2020, "Hypothesis
testing interpretations and Renyi differential privacy", arXiv:1905.09982, Thm. 21)
applied to the same curve: never above the published value.

Vector noise (`--dp-clip C --dp-noise SIGMA`): one release of the Gaussian mechanism
with std SIGMA * C and L2 sensitivity C. The analytic Gaussian mechanism of Balle and
Wang (2018, "Improving the Gaussian Mechanism for Differential Privacy", Thm. 8) is
exact: delta(eps) = Phi(1/(2 s) - eps s) - e^eps Phi(-1/(2 s) - eps s) with s = SIGMA.
It is never looser than the classical bound of Dwork and Roth (2014, Thm. A.1),
sigma >= sqrt(2 ln(1.25 / delta)) / eps for eps < 1.
"""

from __future__ import annotations

import math

import pytest

from medvec.privacy import dp_sgd_epsilon, gaussian_epsilon

# (noise multiplier, epochs, published epsilon) at N = 60000, batch 256, delta = 1e-5
TF_PRIVACY_MNIST = [(1.12, 60, 2.92), (0.6, 30, 9.74), (1.2, 10, 1.20)]
DELTA = 1e-5
ORDERS = list(range(2, 64))


def _log_a(q: float, sigma: float, order: int) -> float:
    """log A_a of the sampled Gaussian mechanism (Mironov et al. 2019, Sec. 3.3)."""
    terms = [
        math.lgamma(order + 1) - math.lgamma(k + 1) - math.lgamma(order - k + 1)
        + (order - k) * math.log1p(-q) + k * math.log(q) + (k * k - k) / (2 * sigma**2)
        for k in range(order + 1)
    ]  # fmt: skip
    top = max(terms)
    return top + math.log(sum(math.exp(t - top) for t in terms))


def _rdp_curve(q: float, sigma: float, steps: int) -> dict[int, float]:
    return {a: steps * _log_a(q, sigma, a) / (a - 1) for a in ORDERS}


@pytest.mark.parametrize(("sigma", "epochs", "published"), TF_PRIVACY_MNIST)
def test_dp_sgd_epsilon_against_published_values(
    sigma: float, epochs: int, published: float
) -> None:
    q, steps = 256 / 60000, epochs * 60000 // 256  # as the tutorial counts them
    rdp = _rdp_curve(q, sigma, steps)
    classic = min(r + math.log(1 / DELTA) / (a - 1) for a, r in rdp.items())
    assert classic == pytest.approx(published, rel=5e-3)  # the published accountant

    tight = min(
        r + math.log((a - 1) / a) - (math.log(DELTA) + math.log(a)) / (a - 1)
        for a, r in rdp.items()
    )
    assert dp_sgd_epsilon(sigma, q, steps, DELTA, orders=ORDERS) == pytest.approx(tight, rel=1e-9)
    assert dp_sgd_epsilon(sigma, q, steps, DELTA) <= published


def test_dp_sgd_epsilon_grows_with_steps_and_shrinks_with_noise() -> None:
    assert dp_sgd_epsilon(1.1, 0.01, 200, 1e-5) < dp_sgd_epsilon(1.1, 0.01, 400, 1e-5)
    assert dp_sgd_epsilon(2.0, 0.01, 200, 1e-5) < dp_sgd_epsilon(1.0, 0.01, 200, 1e-5)


def _phi(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2))


def _analytic_delta(epsilon: float, sigma: float) -> float:
    """Balle and Wang (2018), Thm. 8, for sensitivity 1 and noise std ``sigma``."""
    return _phi(1 / (2 * sigma) - epsilon * sigma) - math.exp(epsilon) * _phi(
        -1 / (2 * sigma) - epsilon * sigma
    )


@pytest.mark.parametrize("sigma", [0.5, 1.0, 2.0, 5.0])
@pytest.mark.parametrize("delta", [1e-5, 1e-3])
def test_gaussian_epsilon_is_the_analytic_gaussian_mechanism(sigma: float, delta: float) -> None:
    epsilon = gaussian_epsilon(sigma, delta)
    assert epsilon > 0
    assert _analytic_delta(epsilon, sigma) == pytest.approx(delta, rel=1e-3)


@pytest.mark.parametrize("delta", [1e-5, 1e-6])
def test_gaussian_epsilon_is_never_looser_than_dwork_roth(delta: float) -> None:
    for epsilon_classical in (0.25, 0.5, 0.9):
        sigma = math.sqrt(2 * math.log(1.25 / delta)) / epsilon_classical
        assert gaussian_epsilon(sigma, delta) <= epsilon_classical
