"""The numpy engine gives the bits of the torch kernels it replaced.

``_reference`` below is the torch implementation the engine ran before it moved to
numpy (``combine_chunk`` and the strategies' kernels, verbatim in behaviour): float32
accumulation by fused multiply-add in vector order, torch's Mersenne Twister for
DARE's masks, numpy's sort for the median. It passed against the torch engine before
the move. With ``N_VECTORS`` (5) vectors every strategy gives the same bits; with 40,
torch summed TIES's signs and masses over vectors in blocks of 16, the trimmed mean
over vectorised lanes and DARE's rows by a matrix-vector product whose order of
additions is the CPU's BLAS kernel's (on an AVX-512 CPU not vector order from 8
vectors on), and numpy sums in vector order, so those three agree to float32 rounding
of their sums (docs/merging.md, "Numerics"), the other three still bit for bit.

The engine's float32 additions are BLAS saxpy's, fused (torch's bits) where the OpenBLAS
kernel fuses them; the kernel chosen by ``OPENBLAS_CORETYPE=Haswell`` on an AMD EPYC
rounds differently, so float32 results are checked to float32 rounding of their terms,
bfloat16 and float16 (accumulated in float32, then rounded) still bit for bit.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch import Tensor

from medvec.merging import merge_files
from medvec.vectors import VectorMetadata, save_vector
from tests.unit.test_engine import PARAMS, SPEC, saved_base  # the same base and parameters

EXACT = set(PARAMS)
"""Strategies bit-for-bit equal to torch at ``N_VECTORS``: all of them."""
EXACT_AT_ANY_N = {"weighted_mean", "task_arithmetic", "median"}
RANDOM_BLOCK = 1 << 16
N_VECTORS = 5


def _world(root: Path, dtype: torch.dtype) -> tuple[Path, list[Path], dict[str, Tensor]]:
    base, sha, base_state = saved_base(root, dtype)
    paths = []
    for index in range(N_VECTORS):
        gen = torch.Generator().manual_seed(100 + index)
        # magnitudes that differ per vector make the order of additions visible
        tau = {
            k: (10.0 ** (index - 2) * torch.randn(v.shape, generator=gen)).to(dtype)
            for k, v in base_state.items()
            if v.is_floating_point()
        }
        meta = VectorMetadata(
            base_id="base-1",
            base_sha256=sha,
            hospital=f"h{index}",
            num_samples=10 * (index + 1) + 3,
            spec=SPEC,
        )
        paths.append(save_vector(root / f"v{index}.safetensors", tau, meta))
    return base, paths, base_state


# -- the torch kernels the engine used to run ----------------------------------------------


def _block_seed(seed: int, key: str, index: int, block: int) -> int:
    import hashlib

    digest = hashlib.blake2b(f"{seed}\x00{key}\x00{index}\x00{block}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "little") >> 1


def _torch_keep_mask(seed: int, key: str, index: int, count: int, keep: float) -> Tensor:
    out = torch.empty(count, dtype=torch.bool)
    for block in range((count - 1) // RANDOM_BLOCK + 1 if count else 0):
        start = block * RANDOM_BLOCK
        gen = torch.Generator().manual_seed(_block_seed(seed, key, index, block))
        uniform = torch.rand(RANDOM_BLOCK, generator=gen)
        hi = min(count, start + RANDOM_BLOCK)
        out[start:hi] = uniform[: hi - start] < keep
    return out


def _reference_delta(strategy: str, key: str, deltas: Tensor, weights: Tensor, seed: int) -> Tensor:
    params = PARAMS[strategy]
    n = deltas.shape[0]
    running = key.rsplit(".", 1)[-1] in ("running_mean", "running_var")
    coefficients = None
    if running or strategy == "weighted_mean":
        coefficients = weights / weights.sum()
    elif strategy == "task_arithmetic":
        coefficients = float(params["lambda"]) * weights
    if coefficients is not None:
        out = torch.zeros(deltas.shape[1:], dtype=deltas.dtype)
        for row, c in zip(deltas, coefficients.tolist(), strict=True):
            out.add_(row, alpha=c)
        return out
    if strategy in ("median", "trimmed_mean"):
        ordered = np.ascontiguousarray(deltas.numpy().T)
        ordered.sort(axis=1)
        cols = torch.from_numpy(ordered)
        if strategy == "median":
            if n % 2:
                return cols[:, n // 2].contiguous()
            return (cols[:, n // 2 - 1] + cols[:, n // 2]) / 2
        trim = math.floor(params["trim_fraction"] * n)
        return cols[:, trim : n - trim].mean(dim=1)
    scale = float(params["lambda"])
    if strategy == "ties":
        density = params["density"]
        stats = []
        for row in deltas:
            flat = row.abs()
            keep = max(1, math.ceil(density * flat.numel()))
            stats.append(float(torch.kthvalue(flat, flat.numel() - keep + 1).values))
        thresholds = torch.tensor(stats, dtype=torch.float64)
        values = deltas * (deltas.abs() >= thresholds[:, None].to(deltas.dtype))
        total = (values * weights[:, None]).sum(dim=0)
        sign = torch.where(total >= 0, 1.0, -1.0).to(values.dtype)
        agree = (torch.sign(values) == sign[None, :]) & (values != 0)
        w = weights[:, None] * agree
        mass = w.sum(dim=0)
        total = (values * w).sum(dim=0)
        return scale * torch.where(mass > 0, total / torch.where(mass > 0, mass, 1.0), 0.0)
    keep = 1.0 - params["drop_rate"]
    masks = torch.stack(
        [_torch_keep_mask(seed, key, i, deltas.shape[1], keep) for i in range(n)]
    ).to(deltas.dtype)
    return scale * (weights @ (deltas * masks / keep))


def _reference(
    strategy: str, base_state: dict[str, Tensor], vectors: list[Path], seed: int
) -> dict[str, Tensor]:
    loaded = [load_file(str(p)) for p in vectors]
    if strategy == "weighted_mean":
        raw = [10.0 * (i + 1) + 3 for i in range(len(vectors))]
    else:
        raw = [1.0] * len(vectors)
    out = {}
    for key, base in base_state.items():
        if not base.is_floating_point():
            out[key] = base
            continue
        work = torch.float64 if base.dtype == torch.float64 else torch.float32
        deltas = torch.stack([v[key].reshape(-1) for v in loaded]).to(work)
        weights = torch.tensor(raw, dtype=torch.float64).to(work)
        delta = _reference_delta(strategy, key, deltas, weights, seed)
        out[key] = (base.reshape(-1).to(work) + delta).to(base.dtype).reshape(base.shape)
    return out


# -- the checks --------------------------------------------------------------------------------


def _ulps(a: Tensor, b: Tensor) -> int:
    """Largest distance in units in the last place (same-sign values)."""
    bits = {torch.float32: torch.int32, torch.bfloat16: torch.int16, torch.float16: torch.int16}
    ia, ib = a.view(bits[a.dtype]).to(torch.int64), b.view(bits[b.dtype]).to(torch.int64)
    return int((ia - ib).abs().max()) if a.numel() else 0


def _rounding_bound(key: str, base_state: dict[str, Tensor], vectors: list[Path]) -> float:
    """``N`` float32 roundings of a sum whose terms are at most the base's and each
    vector's largest magnitude (weights and lambda are at most 1)."""
    terms = float(base_state[key].abs().max()) + sum(
        float(load_file(str(p))[key].abs().max()) for p in vectors
    )
    return (N_VECTORS + 1) * 2.0**-23 * terms


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("strategy", list(PARAMS))
def test_engine_gives_the_bits_of_the_torch_kernels(
    tmp_path: Path, strategy: str, dtype: torch.dtype
) -> None:
    base, vectors, base_state = _world(tmp_path, dtype)
    out = tmp_path / "merged.safetensors"
    # a small buffer forces several chunks per large tensor
    merge_files(
        base,
        vectors,
        out,
        strategy=strategy,
        params=PARAMS[strategy],
        seed=11,
        buffer_bytes=4 * 4 * RANDOM_BLOCK,
    )
    merged = load_file(str(out))
    expected = _reference(strategy, base_state, vectors, seed=11)
    assert sorted(merged) == sorted(expected)
    for key, value in merged.items():
        want = expected[key]
        assert value.dtype == want.dtype and value.shape == want.shape, key
        if value.dtype == torch.float32 and value.is_floating_point():
            # the engine's float32 additions are BLAS saxpy's: fused on CPUs whose OpenBLAS
            # kernel fuses them (then the bits are torch's), rounded twice on a kernel that
            # does not (OPENBLAS_CORETYPE chooses it): N roundings of the terms at most
            torch.testing.assert_close(
                value, want, rtol=0, atol=_rounding_bound(key, base_state, vectors)
            )
        elif (
            not value.is_floating_point()
            or strategy in EXACT
            or key.endswith(("running_mean", "running_var"))
        ):
            assert torch.equal(
                value.reshape(-1).view(torch.uint8), want.reshape(-1).view(torch.uint8)
            ), f"{strategy} {key}: bits differ"
        else:
            assert _ulps(value, want) <= 2, f"{strategy} {key}: {_ulps(value, want)} ulps"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_running_sums_give_the_bits_of_the_torch_accumulation(
    tmp_path: Path, dtype: torch.dtype
) -> None:
    from medvec.merging.sums import Share, build_sums, merge_from_sums

    base, vectors, base_state = _world(tmp_path, dtype)
    weights = [13.0, 2.5, 7.0, 1.0, 30.0]
    shares = [Share(f"v{i}", p, w) for i, (p, w) in enumerate(zip(vectors, weights, strict=True))]
    build_sums(base, shares, tmp_path / "sums.safetensors")
    merged = merge_from_sums(base, tmp_path / "sums.safetensors", tmp_path / "m.safetensors")

    loaded = [load_file(str(p)) for p in vectors]
    sums, model = load_file(str(tmp_path / "sums.safetensors")), load_file(str(merged.path))
    total = sum(weights)
    for key, base_tensor in base_state.items():
        if not base_tensor.is_floating_point():
            continue
        acc = torch.zeros(base_tensor.shape, dtype=torch.float64)
        for w, vector in zip(weights, loaded, strict=True):
            acc.add_(vector[key], alpha=w)  # what the torch code did: float64 fma
        assert torch.equal(sums[key], acc), key
        expected = (base_tensor.float() + (acc * (1.0 / total)).float()).to(dtype)
        assert torch.equal(model[key].view(torch.uint8), expected.view(torch.uint8)), key


@pytest.mark.parametrize("strategy", list(PARAMS))
def test_many_vectors_in_memory_against_the_torch_kernels(strategy: str) -> None:
    from medvec.merging import merge_state_dicts

    gen = torch.Generator().manual_seed(5)
    n, key = 40, "layer.weight"
    base = {key: torch.randn(3 * RANDOM_BLOCK + 5, generator=gen)}
    vectors = [
        {key: 10.0 ** (i % 5 - 2) * torch.randn(base[key].shape, generator=gen)} for i in range(n)
    ]
    got = merge_state_dicts(base, vectors, strategy=strategy, params=PARAMS[strategy], seed=2)
    deltas = torch.stack([v[key] for v in vectors])
    want = base[key] + _reference_delta(strategy, key, deltas, torch.ones(n), seed=2)
    if strategy == "median":
        assert torch.equal(got[key].view(torch.int32), want.view(torch.int32))
    elif strategy in ("dare", *EXACT_AT_ANY_N):
        # two orders (or roundings) of n float32 additions: n roundings of sum |terms|
        terms = _reference_delta(strategy, key, deltas.abs(), torch.ones(n), seed=2)
        bound = n * 2.0**-23 * (base[key].abs() + terms)
        assert bool(((got[key] - want).abs() <= bound).all())
    else:  # sums of terms up to 10 in float32: rounding of order 10 * 2**-24 * n
        torch.testing.assert_close(got[key], want, rtol=0, atol=n * 10 * 2.0**-23)
