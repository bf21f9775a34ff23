"""The one lambda tuner (``medvec.merging.tuning``), ``MergeSpec`` and the engine's rebase."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from medvec.errors import IncompatibleBaseError, MergeError
from medvec.hashing import sha256_file
from medvec.merging import (
    MergeSpec,
    apply_lambda,
    best_lambda,
    default_lambda_grid,
    delta_from_files,
    delta_from_states,
    merge_files,
    merge_state_dicts,
    scan_lambdas,
)
from medvec.models import build_model, load_model_file, save_model_file
from medvec.vectors import VectorMetadata, compute_vector, is_running_stat, save_vector
from tests.unit.test_engine import SPEC, _mlp

State = dict[str, torch.Tensor]


def _base_state() -> State:
    torch.manual_seed(0)
    model = _mlp(num_classes=2, in_channels=1, image_size=8)
    model(torch.randn(4, 1, 8, 8))
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _vectors(base: State, count: int = 3) -> list[State]:
    out = []
    for index in range(count):
        gen = torch.Generator().manual_seed(10 + index)
        tuned = {
            k: v + 0.1 * torch.randn(v.shape, generator=gen) if v.is_floating_point() else v
            for k, v in base.items()
        }
        out.append(compute_vector(base, tuned))
    return out


def _files(
    root: Path, base: State, vectors: list[State], base_id: str = "b1"
) -> tuple[Path, list[Path]]:
    base_path = save_model_file(root / f"{base_id}.safetensors", base, SPEC, {"name": base_id})
    sha = sha256_file(base_path)
    paths = []
    for index, vector in enumerate(vectors):
        meta = VectorMetadata(
            base_id=base_id, base_sha256=sha, hospital=f"h{index}", num_samples=5 + index, spec=SPEC
        )
        paths.append(save_vector(root / f"{base_id}-v{index}.safetensors", vector, meta))
    return base_path, paths


def _snapshot(model: torch.nn.Module) -> dict[str, Any]:
    return {"accuracy": 0.0, "state": {k: v.clone() for k, v in model.state_dict().items()}}


def test_each_lambda_equals_a_task_arithmetic_merge_and_running_stats_stay_the_mean() -> None:
    base = _base_state()
    vectors = _vectors(base)
    weights = [1.0, 2.0, 0.5]
    delta = delta_from_states(vectors, weights)
    model = build_model(SPEC)
    scan = scan_lambdas(model, base.__getitem__, delta, [3.0, 0.5], _snapshot)
    assert list(scan.scores) == [0.5, 3.0]  # ascending, whatever the order given
    assert scan.chosen == 0.5  # equal scores: the smaller lambda
    for lam, scores in scan.scores.items():
        assert scores is not None
        state = scores["state"]
        expected = merge_state_dicts(
            base, vectors, strategy="task_arithmetic", params={"lambda": lam}, weights=weights
        )
        assert any(is_running_stat(k) for k in state)
        for key, value in state.items():
            torch.testing.assert_close(value, expected[key], rtol=1e-5, atol=1e-6)


def test_the_delta_streamed_from_files_equals_the_in_memory_one(tmp_path: Path) -> None:
    base = _base_state()
    vectors = _vectors(base, 4)
    base_path, paths = _files(tmp_path, base, vectors)
    weights = [1.0, 0.25, 3.0, 1.0]
    streamed = delta_from_files(base_path, paths, weights)
    expected = delta_from_states(vectors, weights)
    assert streamed.keys() == expected.keys()
    for key, value in expected.items():
        torch.testing.assert_close(streamed[key], value, rtol=1e-6, atol=1e-7)


def test_the_tuned_file_model_matches_the_engine_at_the_chosen_lambda(tmp_path: Path) -> None:
    base = _base_state()
    base_path, paths = _files(tmp_path, base, _vectors(base))
    delta = delta_from_files(base_path, paths, [1.0, 1.0, 1.0])
    model = build_model(SPEC)
    apply_lambda(model, base.__getitem__, delta, 0.7)
    out = merge_files(
        base_path,
        paths,
        tmp_path / "m.safetensors",
        strategy="task_arithmetic",
        params={"lambda": 0.7},
    ).path
    merged, _ = load_model_file(out)
    for key, value in merged.state_dict().items():
        torch.testing.assert_close(model.state_dict()[key], value, rtol=1e-5, atol=1e-6)


def test_ties_go_to_the_smaller_lambda_and_non_finite_points_are_skipped() -> None:
    scores = {0.2: {"accuracy": 0.8}, 0.1: {"accuracy": 0.8}, 1.0: {"accuracy": 0.7}, 9.0: None}
    assert best_lambda(scores) == 0.1
    with pytest.raises(MergeError, match="non-finite"):
        best_lambda({1.0: None})

    base = _base_state()
    delta = delta_from_states(_vectors(base), [1.0, 1.0, 1.0])
    model = build_model(SPEC)
    scan = scan_lambdas(model, base.__getitem__, delta, [1.0, 1e39], lambda m: {"accuracy": 1.0})
    assert scan.scores[1e39] is None and scan.chosen == 1.0


def test_merge_spec_answers_for_weights_linearity_and_tuning() -> None:
    mean = MergeSpec(strategy="weighted_mean", staleness_power=1.0)
    assert mean.weighting == "samples" and mean.is_linear
    assert mean.weight(300) == 300.0 and mean.weight(300, staleness=1) == 150.0
    assert MergeSpec(strategy="task_arithmetic").weight(300) == 1.0
    median = MergeSpec(strategy="median")
    assert median.weighting == "none" and not median.is_linear
    assert median.weight(300, staleness=3) == 1.0 and median.engine_weights([1.0]) is None
    assert not MergeSpec(strategy="ties").is_linear

    tuned = MergeSpec.from_request("task_arithmetic", {"lambda": "tune"}, num_vectors=4)
    assert tuned.tunes and tuned.lambda_grid == tuple(default_lambda_grid(4))
    named = MergeSpec.from_request("task_arithmetic", {"lambda_grid": [1, 0.3]}, num_vectors=4)
    assert named.lambda_grid == (0.3, 1.0) and named.with_lambda(0.3).params == {"lambda": 0.3}
    bad: list[tuple[str, dict[str, Any]]] = [
        ("ties", {"lambda": "tune"}),
        ("task_arithmetic", {"lambda_grid": [0.5, -1]}),
        ("task_arithmetic", {"lambda_grid": "many"}),
        ("weighted_mean", {"density": 0.2}),
        ("no_such", {}),
    ]
    for strategy, params in bad:
        with pytest.raises(MergeError):
            MergeSpec.from_request(strategy, params, num_vectors=2)


def test_the_engine_applies_an_older_generations_vector_only_when_asked(tmp_path: Path) -> None:
    old_base = _base_state()
    vectors = _vectors(old_base, 2)
    _, paths = _files(tmp_path, old_base, vectors, base_id="old")
    new_state = {k: v + 0.01 if v.is_floating_point() else v for k, v in old_base.items()}
    new_base = save_model_file(tmp_path / "new.safetensors", new_state, SPEC, {"name": "new"})
    with pytest.raises(IncompatibleBaseError):
        merge_files(new_base, paths, tmp_path / "refused.safetensors", strategy="weighted_mean")
    assert not (tmp_path / "refused.safetensors").exists()

    result = merge_files(
        new_base, paths, tmp_path / "rebased.safetensors", strategy="weighted_mean", rebase=True
    )
    merged, _ = load_model_file(result.path)
    expected = merge_state_dicts(new_state, vectors, strategy="weighted_mean", num_samples=[5, 6])
    for key, value in merged.state_dict().items():
        torch.testing.assert_close(value, expected[key], rtol=1e-5, atol=1e-6)
    assert [v["base_id"] for v in result.lineage["vectors"]] == ["old", "old"]
    # no relabelled copies were written: only the inputs and the output
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "new.safetensors",
        "old-v0.safetensors",
        "old-v1.safetensors",
        "old.safetensors",
        "rebased.safetensors",
    ]
