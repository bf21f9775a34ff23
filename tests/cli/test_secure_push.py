"""``medvec push --secure`` pre-scales the vector by its public weight (issue 22): the
sample count by default, ``--secure-weight`` when given, 1 with ``--dp-noise``; a weight
the encoding cannot hold at the norm bound is refused before anything is split or sent."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from hospital_cli.errors import CliError
from hospital_cli.secure import DistributedNoise, prepare_shares
from medvec.secure.encoding import FRAC_BITS, decode
from medvec.secure.shares import read_share_info
from medvec.vectors import VectorMetadata, save_vector
from medvec.vectors.lazy import LazyTensorReader
from tests.cli.conftest import CliResult, assert_one_line_error

SAMPLES = 64
UNREACHABLE = "http://127.0.0.1:9"


@pytest.fixture
def vector(tmp_path: Path) -> Path:
    meta = VectorMetadata(base_id="b", base_sha256="0" * 64, hospital="h", num_samples=SAMPLES)
    tensors = {"w": torch.linspace(-1, 1, 40).reshape(8, 5), "b": torch.full((5,), 0.25)}
    return save_vector(tmp_path / "vector.safetensors", tensors, meta)


def _encoded(share_a: Path, share_b: Path, name: str) -> torch.Tensor:
    with LazyTensorReader(share_a) as a, LazyTensorReader(share_b) as b:
        total = a.read(name, copy=True).numpy().view("uint64") + b.read(name).numpy().view("uint64")
    return torch.from_numpy(decode(total))


def test_shares_encode_the_vector_times_its_public_weight(vector: Path, tmp_path: Path) -> None:
    pair = prepare_shares(vector, "f" * 64, tmp_path / "cache", noise=None, max_norm=1.0e4)
    assert pair.weight == SAMPLES
    assert read_share_info(pair.share_a).weight == read_share_info(pair.share_b).weight == SAMPLES
    expected = torch.linspace(-1, 1, 40).reshape(8, 5).double() * SAMPLES
    assert (
        float((_encoded(pair.share_a, pair.share_b, "w") - expected).abs().max()) <= 2.0**-FRAC_BITS
    )

    chosen = prepare_shares(
        vector, "f" * 64, tmp_path / "cache", noise=None, max_norm=1e4, weight=5
    )
    assert chosen.weight == 5 and chosen.pair_id != pair.pair_id  # cached apart
    noise = DistributedNoise(noise_multiplier=0.1, clip=10.0, k=3, delta=1e-5)
    noisy = prepare_shares(vector, "f" * 64, tmp_path / "cache", noise=noise, max_norm=1e4)
    assert noisy.weight == 1 and read_share_info(noisy.share_b).weight == 1
    with pytest.raises(CliError, match="with --dp-noise"):
        prepare_shares(vector, "f" * 64, tmp_path / "cache", noise=noise, max_norm=1e4, weight=5)


def test_a_weight_the_encoding_cannot_hold_is_refused_at_push(
    vector: Path, cli: Callable[..., CliResult]
) -> None:
    # at this bound a sum's weights may total 53 at most: the 64 samples cannot be encoded
    bound = 1.0e10
    result = cli(
        "push", vector, "--secure", "--max-norm", bound,
        "--server", UNREACHABLE, "--token", "t",
        "--share-holder", UNREACHABLE, "--share-holder-token", "t",
    )  # fmt: skip
    assert_one_line_error(result, 1, "public weight 64", "cannot be encoded", "at most 53")
