"""medvec.merging.merge_files: the streaming engine against the in-memory merge, on real files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from medvec.errors import IncompatibleBaseError, MergeError
from medvec.hashing import sha256_file
from medvec.merging import (
    list_strategies,
    mean_pairwise_cosine,
    merge_files,
    merge_state_dicts,
    pairwise_dots,
)
from medvec.merging.masks import RANDOM_BLOCK
from medvec.models import (
    ModelSpec,
    list_models,
    load_model_file,
    read_model_provenance,
    read_model_spec,
    register_model,
    save_model_file,
)
from medvec.vectors import (
    VectorMetadata,
    compute_vector,
    is_running_stat,
    load_vector,
    save_vector,
)

ARCH = "unit_engine_mlp"
PARAMS: dict[str, dict[str, float]] = {
    "weighted_mean": {},
    "task_arithmetic": {"lambda": 0.4},
    "ties": {"density": 0.3, "lambda": 0.8},
    "dare": {"drop_rate": 0.7, "lambda": 0.5},
    "median": {},
    "trimmed_mean": {"trim_fraction": 0.25},
}


def _mlp(*, num_classes: int, in_channels: int = 3, image_size: int = 28) -> nn.Module:
    # 400 x 300 = 120,000 weights: more than one random block, so chunking is exercised
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(in_channels * image_size * image_size, 300),
        nn.BatchNorm1d(300),
        nn.Linear(300, 400),
        nn.Linear(400, num_classes),
    )


if ARCH not in list_models():
    register_model(ARCH)(_mlp)

SPEC = ModelSpec(arch=ARCH, num_classes=2, in_channels=1, image_size=8)


def saved_base(
    root: Path, dtype: torch.dtype = torch.float32
) -> tuple[Path, str, dict[str, torch.Tensor]]:
    """The seeded MLP (floats as ``dtype``, BatchNorm statistics updated once) saved as
    ``base.safetensors`` in ``root``: its path, sha256 and state."""
    torch.manual_seed(0)
    model = _mlp(num_classes=2, in_channels=1, image_size=8)
    model(torch.randn(4, 1, 8, 8))
    state = {
        k: v.detach().clone().to(dtype) if v.is_floating_point() else v.detach().clone()
        for k, v in model.state_dict().items()
    }
    base = save_model_file(root / "base.safetensors", state, SPEC, {"name": "base"})
    return base, sha256_file(base), state


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    root = tmp_path_factory.mktemp("engine")
    base, sha, base_state = saved_base(root)
    paths = []
    for index in range(4):
        gen = torch.Generator().manual_seed(100 + index)
        tuned = {
            k: v + 0.1 * torch.randn(v.shape, generator=gen) if v.is_floating_point() else v + 3
            for k, v in base_state.items()
        }
        meta = VectorMetadata(
            base_id="base-1",
            base_sha256=sha,
            hospital=f"h{index}",
            num_samples=10 * (index + 1),
            spec=SPEC,
        )
        path = root / f"v{index}.safetensors"
        paths.append(save_vector(path, compute_vector(base_state, tuned), meta))
    return base, paths


def _in_memory(base: Path, vectors: list[Path], strategy: str, **kwargs: object) -> dict:
    model, _ = load_model_file(base)
    loaded = [load_vector(p) for p in vectors]
    return merge_state_dicts(
        model.state_dict(),
        [tensors for tensors, _ in loaded],
        strategy=strategy,
        num_samples=[meta.num_samples for _, meta in loaded],
        **kwargs,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize("strategy", list_strategies())
def test_streaming_engine_equals_the_in_memory_merge(
    files: tuple[Path, list[Path]], tmp_path: Path, strategy: str
) -> None:
    base, vectors = files
    out = tmp_path / "merged.safetensors"
    # a small buffer forces several chunks per large tensor
    result = merge_files(
        base,
        vectors,
        out,
        strategy=strategy,
        params=PARAMS[strategy],
        seed=7,
        buffer_bytes=4 * 4 * RANDOM_BLOCK,
    )

    expected = _in_memory(base, vectors, strategy, params=PARAMS[strategy], seed=7)
    merged, spec = load_model_file(out)
    assert spec == SPEC
    for key, value in merged.state_dict().items():
        torch.testing.assert_close(value, expected[key], rtol=1e-5, atol=1e-6)
    assert result.sha256 == sha256_file(out)
    assert result.num_vectors == 4
    assert not list(tmp_path.glob(".*.tmp"))


def test_output_is_a_model_file_with_lineage(
    files: tuple[Path, list[Path]], tmp_path: Path
) -> None:
    base, vectors = files
    calls: list[tuple[int, int, str]] = []
    out = merge_files(
        base,
        vectors,
        tmp_path / "m.safetensors",
        strategy="weighted_mean",
        provenance={"name": "v7", "generation": 2},
        progress=lambda done, total, key: calls.append((done, total, key)),
    ).path

    provenance = read_model_provenance(out)
    assert provenance["name"] == "v7"
    lineage = provenance["lineage"]
    assert lineage["strategy"] == "weighted_mean"
    assert lineage["weights"] == [10.0, 20.0, 30.0, 40.0]  # samples by default
    assert [v["hospital"] for v in lineage["vectors"]] == ["h0", "h1", "h2", "h3"]
    assert lineage["base_sha256"] == sha256_file(base)
    assert read_model_spec(out) == SPEC
    base_model, _ = load_model_file(base)
    merged, _ = load_model_file(out)
    steps = "2.num_batches_tracked"
    assert torch.equal(merged.state_dict()[steps], base_model.state_dict()[steps])
    assert calls[-1][0] == calls[-1][1] == len(base_model.state_dict())


def test_weighted_mean_of_one_vector_gives_the_finetuned_model(
    files: tuple[Path, list[Path]], tmp_path: Path
) -> None:
    base, vectors = files
    out = merge_files(base, vectors[:1], tmp_path / "one.safetensors", strategy="weighted_mean")
    base_model, _ = load_model_file(base)
    merged, _ = load_model_file(out.path)
    tensors, _ = load_vector(vectors[0])
    for key, delta in tensors.items():
        torch.testing.assert_close(merged.state_dict()[key], base_model.state_dict()[key] + delta)


def test_merges_are_deterministic(files: tuple[Path, list[Path]], tmp_path: Path) -> None:
    base, vectors = files
    first = merge_files(base, vectors, tmp_path / "a.safetensors", strategy="dare", seed=1)
    again = merge_files(base, vectors, tmp_path / "b.safetensors", strategy="dare", seed=1)
    other = merge_files(base, vectors, tmp_path / "c.safetensors", strategy="dare", seed=2)
    assert first.sha256 == again.sha256 != other.sha256


def test_vector_of_another_base_is_refused_before_any_work(
    files: tuple[Path, list[Path]], tmp_path: Path
) -> None:
    base, vectors = files
    model, _ = load_model_file(base)
    other_state = {k: v + 1 if v.is_floating_point() else v for k, v in model.state_dict().items()}
    other = save_model_file(tmp_path / "other.safetensors", other_state, SPEC)
    out = tmp_path / "never.safetensors"
    with pytest.raises(IncompatibleBaseError):
        merge_files(other, vectors, out, strategy="median")
    assert not out.exists()
    with pytest.raises(MergeError, match="2 weights given for 4 vectors"):
        merge_files(base, vectors, out, strategy="weighted_mean", weights=[1, 2])
    with pytest.raises(MergeError, match="more than once"):
        merge_files(base, [vectors[0], vectors[0]], out, strategy="median")
    with pytest.raises(MergeError, match="unknown merge strategy"):
        merge_files(base, vectors, out, strategy="nope")
    assert not out.exists()
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parametrize("strategy", list_strategies())
def test_running_statistics_are_averaged_bit_for_bit_in_both_paths(
    files: tuple[Path, list[Path]], tmp_path: Path, strategy: str
) -> None:
    """Whatever the strategy, BatchNorm running statistics are the weighted mean of the
    deltas (sample weights for weighted_mean, uniform otherwise), identical in the
    streaming engine (its linear path) and in memory."""
    base, vectors = files
    out = merge_files(
        base,
        vectors,
        tmp_path / "m.safetensors",
        strategy=strategy,
        params=PARAMS[strategy],
        seed=7,
        buffer_bytes=4 * 4 * RANDOM_BLOCK,
    ).path
    expected = _in_memory(base, vectors, strategy, params=PARAMS[strategy], seed=7)
    merged = load_model_file(out)[0].state_dict()
    base_state = load_model_file(base)[0].state_dict()
    loaded = [load_vector(p) for p in vectors]
    weights = [float(m.num_samples) if strategy == "weighted_mean" else 1.0 for _, m in loaded]
    stats = [k for k in merged if is_running_stat(k)]
    assert stats == ["2.running_mean", "2.running_var"]
    for key in stats:
        assert torch.equal(merged[key], expected[key])
        mean = sum(w * t[key].double() for w, (t, _) in zip(weights, loaded, strict=True))
        by_hand = base_state[key].double() + mean / sum(weights)
        torch.testing.assert_close(merged[key].double(), by_hand, rtol=1e-6, atol=1e-7)


def test_mean_pairwise_cosine_streams_and_leaves_running_statistics_out(
    files: tuple[Path, list[Path]],
) -> None:
    _base, vectors = files
    flat = []
    for path in vectors:
        tensors, _ = load_vector(path)
        flat.append(
            torch.cat(
                [t.double().reshape(-1) for k, t in tensors.items() if not is_running_stat(k)]
            )
        )
    by_hand = [
        float(torch.nn.functional.cosine_similarity(flat[i], flat[j], dim=0))
        for i in range(4)
        for j in range(i + 1, 4)
    ]
    # a small buffer forces several chunks per large tensor
    got = mean_pairwise_cosine(vectors, buffer_bytes=4 * 4 * 1000)
    assert got == pytest.approx(sum(by_hand) / len(by_hand), rel=1e-9)
    gram = pairwise_dots(vectors[:2])
    assert float(gram[0, 1]) == pytest.approx(float(flat[0] @ flat[1]), rel=1e-9)
    assert mean_pairwise_cosine(vectors[:1]) is None
