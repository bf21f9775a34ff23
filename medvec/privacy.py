"""Differential privacy for data vectors: clipping, Gaussian noise and accounting.

Two ways to privatise what a hospital shares:

* **Output perturbation** (``medvec train --dp-clip C --dp-noise SIGMA``): clip the
  whole vector to L2 norm ``C`` (``clip_by_l2``), add ``N(0, (SIGMA*C)^2)`` to every
  coordinate (``add_gaussian_noise``). This is one release of the Gaussian
  mechanism with L2 sensitivity ``C`` (changing one hospital's data moves the
  clipped vector by at most ``C`` in the add/remove-a-whole-vector sense), and
  ``gaussian_epsilon`` gives its exact epsilon by the *analytic Gaussian mechanism*
  of Balle & Wang (ICML 2018, Theorem 8), which is tight and, unlike the classic
  bound ``sigma >= sqrt(2 ln(1.25/delta)) / epsilon``, valid for every epsilon.
* **DP-SGD** (Abadi et al., CCS 2016): per-sample clipping and noise at every step
  (``medvec.training`` with Opacus); ``dp_sgd_epsilon`` accounts it with Opacus's
  Renyi-DP accountant for the Poisson-subsampled Gaussian mechanism (Mironov et al.
  2019), converted to (epsilon, delta) as Opacus does (Balle et al. 2020).

**Randomness.** A guarantee rests on the noise (and DP-SGD's sampling) being secret.
Both come from the operating system's CSPRNG (``os.urandom``) and are never seeded
nor recorded: noise drawn from a seed a vector carries is regenerated and subtracted
exactly by anyone holding the vector, and torch's generators (Mersenne Twister,
Philox) are not cryptographic, so their state follows from enough of their outputs.
``secure_normal`` is the one Gaussian source: Box–Muller over 53-bit uniforms in
float64, added before one rounding to the tensor's precision; that narrows, without
formally closing, the floating-point attacks on Gaussian samplers (Jin et al. 2021,
arXiv:2112.05307).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar, overload

from medvec.errors import PrivacyError

if TYPE_CHECKING:  # the accountant half is imported by the registry, which runs torch-free
    import torch
    from torch import Tensor

__all__ = [
    "add_gaussian_noise",
    "accountant_history",
    "clip_by_l2",
    "compose_epsilon",
    "dp_sgd_epsilon",
    "gaussian_delta",
    "gaussian_epsilon",
    "gaussian_noised",
    "l2_norm",
    "poisson_subsample",
    "secure_normal",
    "secure_uniform",
]

HistoryEntry = tuple[float, float, int]
"""One entry of Opacus's accountant history: (noise multiplier, sample rate, steps)."""
T = TypeVar("T", "Mapping[str, Tensor]", "Sequence[Tensor]")
EPSILON_SEARCH_MAX = 1e4
UNIFORM_BITS = 53
"""Random bits per uniform: a float64 mantissa's worth."""
LOG_PHI_ASYMPTOTIC_BELOW = -30.0


def _values(tensors: Mapping[str, Tensor] | Sequence[Tensor]) -> Iterable[Tensor]:
    return tensors.values() if isinstance(tensors, Mapping) else tensors


@overload
def _rebuild(tensors: Mapping[str, Tensor], values: Iterable[Tensor]) -> dict[str, Tensor]: ...
@overload
def _rebuild(tensors: Sequence[Tensor], values: Iterable[Tensor]) -> list[Tensor]: ...
def _rebuild(
    tensors: Mapping[str, Tensor] | Sequence[Tensor], values: Iterable[Tensor]
) -> dict[str, Tensor] | list[Tensor]:
    """``values`` in the container kind of ``tensors`` (a dict for a mapping, in its key order)."""
    if isinstance(tensors, Mapping):
        return dict(zip(tensors.keys(), values, strict=True))
    return list(values)


def l2_norm(tensors: Mapping[str, Tensor] | Sequence[Tensor]) -> float:
    """Global L2 norm over the floating tensors, accumulated in float64."""
    import torch

    total = torch.zeros((), dtype=torch.float64)
    for tensor in _values(tensors):
        if tensor.is_floating_point():
            total += tensor.detach().to(torch.float64).square().sum().cpu()
    return math.sqrt(float(total))


def clip_by_l2(tensors: T, max_norm: float) -> T:
    """Scale all floating tensors together so that their global L2 norm is at most ``max_norm``.

    Non-floating tensors are passed through; nothing is scaled when already within bound.
    """
    if not max_norm > 0:
        raise PrivacyError(f"clipping bound must be > 0, not {max_norm}")
    norm = l2_norm(tensors)
    if norm <= max_norm:
        return _rebuild(tensors, (t.clone() for t in _values(tensors)))
    scale = max_norm / norm
    return _rebuild(
        tensors, ((t * scale if t.is_floating_point() else t.clone()) for t in _values(tensors))
    )


def secure_uniform(count: int, *, device: torch.device | str | None = None) -> Tensor:
    """``count`` i.i.d. uniforms on (0, 1] in float64, from the operating system's CSPRNG:
    the top 53 bits of 8 random bytes each, plus one, times 2^-53 (exact in float64)."""
    import torch

    target = torch.device("cpu") if device is None else torch.device(device)
    if count == 0:
        return torch.empty(0, dtype=torch.float64, device=target)
    raw = torch.frombuffer(bytearray(os.urandom(8 * count)), dtype=torch.int64).to(target)
    top = (raw >> (64 - UNIFORM_BITS)) & ((1 << UNIFORM_BITS) - 1)
    return (top + 1).to(torch.float64) * 2.0**-UNIFORM_BITS


def secure_normal(shape: Sequence[int], *, device: torch.device | str | None = None) -> Tensor:
    """i.i.d. ``N(0, 1)`` of ``shape`` in float64, from the OS CSPRNG by Box–Muller.

    Computed on ``device`` when it is CUDA (every CUDA device has float64), else on the
    CPU and moved there.
    """
    import torch

    target = torch.device(device) if device is not None else torch.device("cpu")
    work = target if target.type == "cuda" else torch.device("cpu")
    count = math.prod(shape)
    pairs = (count + 1) // 2
    uniforms = secure_uniform(2 * pairs, device=work)
    radius = torch.sqrt(-2.0 * torch.log(uniforms[:pairs]))  # u in (0, 1]: log is finite
    angle = (2 * math.pi) * uniforms[pairs:]
    normals = torch.cat([radius * torch.cos(angle), radius * torch.sin(angle)])
    return normals[:count].reshape(tuple(shape)).to(target)


def gaussian_noised(tensor: Tensor, std: float) -> Tensor:
    """``tensor`` plus i.i.d. ``N(0, std^2)`` noise from ``secure_normal``, added in float64
    and rounded once to the tensor's dtype."""
    noise = secure_normal(tuple(tensor.shape), device=tensor.device).mul_(std)
    return noise.add_(tensor.detach()).to(tensor.dtype)


def poisson_subsample(count: int, sample_rate: float) -> Tensor:
    """The indices of ``range(count)`` each kept with probability ``sample_rate``, drawn
    from the OS CSPRNG: DP-SGD's amplification by sampling holds only while the batches
    stay secret."""
    import torch

    return torch.nonzero(secure_uniform(count) <= sample_rate).flatten()


def add_gaussian_noise(tensors: T, std: float) -> T:
    """Every floating tensor plus i.i.d. ``N(0, std^2)`` noise (``gaussian_noised``); other
    tensors are passed through. The noise is new on every call and nothing reproduces it."""
    if std < 0 or not math.isfinite(std):
        raise PrivacyError(f"noise standard deviation must be finite and >= 0, not {std}")

    def noisy(tensor: Tensor) -> Tensor:
        return gaussian_noised(tensor, std) if tensor.is_floating_point() else tensor.clone()

    return _rebuild(tensors, (noisy(t) for t in _values(tensors)))


def _log_phi(x: float) -> float:
    """log of the standard normal CDF, accurate far into the lower tail."""
    if x < LOG_PHI_ASYMPTOTIC_BELOW:
        return -0.5 * x * x - math.log(-x) - 0.5 * math.log(2 * math.pi)
    return math.log(0.5 * math.erfc(-x / math.sqrt(2.0)))


def gaussian_delta(noise_multiplier: float, epsilon: float) -> float:
    """The smallest delta for which the Gaussian mechanism with noise ``sigma * sensitivity``
    is (epsilon, delta)-DP (Balle & Wang 2018, Theorem 8)::

        delta = Phi(1/(2 sigma) - epsilon sigma) - e^epsilon Phi(-1/(2 sigma) - epsilon sigma)
    """
    s = noise_multiplier
    first = math.exp(_log_phi(1.0 / (2 * s) - epsilon * s))
    second = math.exp(epsilon + _log_phi(-1.0 / (2 * s) - epsilon * s))
    return max(first - second, 0.0)


def gaussian_epsilon(noise_multiplier: float, delta: float) -> float:
    """Epsilon of one release of the Gaussian mechanism at ``delta`` (analytic, tight).

    ``noise_multiplier`` is the noise std over the L2 sensitivity (``SIGMA`` when the
    vector is clipped to ``C`` and the noise std is ``SIGMA*C``). Found by bisection
    on ``gaussian_delta``, which decreases in epsilon.
    """
    if not noise_multiplier > 0:
        raise PrivacyError(f"noise multiplier must be > 0, not {noise_multiplier}")
    if not 0 < delta < 1:
        raise PrivacyError(f"delta must lie in (0, 1), not {delta}")
    if gaussian_delta(noise_multiplier, 0.0) <= delta:
        return 0.0
    low, high = 0.0, 1.0
    while gaussian_delta(noise_multiplier, high) > delta:
        low, high = high, high * 2
        if high > EPSILON_SEARCH_MAX:
            return math.inf
    for _ in range(200):
        mid = (low + high) / 2
        if gaussian_delta(noise_multiplier, mid) > delta:
            low = mid
        else:
            high = mid
        if high - low < 1e-12 * max(1.0, high):
            break
    return high


def dp_sgd_epsilon(
    noise_multiplier: float,
    sample_rate: float,
    steps: int,
    delta: float,
    *,
    orders: Sequence[float] | None = None,
) -> float:
    """Epsilon of ``steps`` DP-SGD steps (Poisson sampling rate ``sample_rate``), by
    Opacus's RDP accountant over ``orders`` (default: Opacus's own)."""
    if not noise_multiplier > 0:
        raise PrivacyError(f"noise multiplier must be > 0, not {noise_multiplier}")
    if not 0 < sample_rate <= 1:
        raise PrivacyError(f"sample rate must lie in (0, 1], not {sample_rate}")
    if not 0 < delta < 1:
        raise PrivacyError(f"delta must lie in (0, 1), not {delta}")
    if steps <= 0:
        return 0.0
    try:
        from opacus.accountants import RDPAccountant
        from opacus.accountants.analysis.rdp import compute_rdp, get_privacy_spent
    except ImportError as exc:
        raise PrivacyError(
            "DP-SGD accounting needs Opacus", hint="pip install 'medvec[client]'"
        ) from exc
    alphas = list(orders) if orders is not None else list(RDPAccountant.DEFAULT_ALPHAS)
    rdp = compute_rdp(q=sample_rate, noise_multiplier=noise_multiplier, steps=steps, orders=alphas)
    epsilon, _ = get_privacy_spent(orders=alphas, rdp=rdp, delta=delta)
    return float(epsilon)


def accountant_history(privacy: Mapping[str, Any]) -> list[HistoryEntry] | None:
    """The RDP accountant's history behind a vector's ``privacy`` metadata, or None when
    the vector carries no differential-privacy guarantee (no noise: epsilon is infinite).

    DP-SGD vectors carry Opacus's own history (``history``; older ones the single entry
    ``dp_noise``, ``sample_rate``, ``steps``); an output-perturbed vector is one release
    of the Gaussian mechanism: noise ``dp_noise``, sample rate 1, one step. A DP-SGD
    record of no step at all has no guarantee either: the vector left the hospital, and
    no noisy step accounts for what it holds (a real run takes at least one).
    """
    if privacy.get("dp_sgd"):
        history: list[HistoryEntry] | None = None
        if privacy.get("history"):
            history = [(float(n), float(q), int(s)) for n, q, s in privacy["history"]]
        elif privacy.get("dp_noise") and privacy.get("steps") is not None:
            history = [
                (float(privacy["dp_noise"]), float(privacy["sample_rate"]), int(privacy["steps"]))
            ]
        return history if history and sum(entry[2] for entry in history) > 0 else None
    if privacy.get("dp_noise"):
        return [(float(privacy["dp_noise"]), 1.0, 1)]
    return None


def compose_epsilon(history: Sequence[HistoryEntry], delta: float) -> float:
    """Epsilon at ``delta`` of every release in ``history`` together: RDP composition by
    Opacus's ``RDPAccountant`` (the sum of the releases' Renyi divergences per order,
    converted to (epsilon, delta) once)."""
    if not 0 < delta < 1:
        raise PrivacyError(f"delta must lie in (0, 1), not {delta}")
    entries = [e for e in history if e[2] > 0]
    if not entries:
        return 0.0
    try:
        from opacus.accountants import RDPAccountant
    except ImportError as exc:
        raise PrivacyError("privacy accounting needs Opacus", hint="pip install opacus") from exc
    accountant = RDPAccountant()
    accountant.history = list(entries)
    return float(accountant.get_epsilon(delta))
