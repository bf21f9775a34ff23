"""``medvec vector create | inspect | validate`` and ``medvec merge``, end to end on real files.

The model is medvec's ResNet-18 with the 28x28 MedMNIST stem; nothing here needs a
registry.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from hospital_cli.commands.merge import STRATEGY_NAMES
from medvec.calibration import recalibrate_bn
from medvec.data import load_npz
from medvec.hashing import sha256_file
from medvec.merging import list_strategies
from medvec.models import (
    ModelSpec,
    build_model,
    load_model_file,
    read_model_provenance,
    save_model_file,
)
from medvec.vectors import is_running_stat, load_vector
from tests.cli.conftest import CliResult, assert_one_line_error

SPEC = ModelSpec(arch="resnet18", num_classes=2, in_channels=1, image_size=28)
Cli = Callable[..., CliResult]


def _perturbed(state: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {
        k: v + 1e-3 * torch.randn(v.shape, generator=gen) if v.is_floating_point() else v + 1
        for k, v in state.items()
    }


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("offline")
    torch.manual_seed(0)
    state = build_model(SPEC).state_dict()
    files = {"base": save_model_file(root / "base.safetensors", state, SPEC, {"name": "base"})}
    for name, seed in (("a", 1), ("b", 2)):
        files[name] = save_model_file(root / f"{name}.safetensors", _perturbed(state, seed), SPEC)
    other = _perturbed(state, 3)
    files["other_base"] = save_model_file(root / "other.safetensors", other, SPEC)
    return files


@pytest.fixture(scope="module")
def vectors(models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two vectors made by the CLI, with 100 and 300 samples."""
    from hospital_cli.main import main

    root = tmp_path_factory.mktemp("vectors")
    paths = []
    for name, samples in (("a", 100), ("b", 300)):
        out = root / f"v{name}.safetensors"
        args = ["vector", "create", "--base", models["base"], "--finetuned", models[name]]
        args += ["-o", out, "--hospital", f"h-{name}", "--num-samples", samples]
        args += ["--meta", "site=north", "--meta", "scanner=GE"]
        main([str(a) for a in args])  # returns normally on success, exits on error
        paths.append(out)
    return paths


def test_create_then_inspect_shows_metadata_count_and_norm(
    cli: Cli, models: dict[str, Path], vectors: list[Path]
) -> None:
    result = cli("vector", "inspect", vectors[0], "--json")
    assert result.exit_code == 0, result.stderr
    report = result.json()

    tensors, meta = load_vector(vectors[0])
    base, _ = load_model_file(models["base"])
    tuned, _ = load_model_file(models["a"])
    floating = [k for k, v in base.state_dict().items() if v.is_floating_point()]
    assert report["num_tensors"] == len(floating) == len(tensors)
    expected = torch.sqrt(
        sum(((tuned.state_dict()[k] - base.state_dict()[k]).double() ** 2).sum() for k in floating)
    )
    assert report["l2_norm"] == pytest.approx(float(expected), rel=1e-6)
    assert report["metadata"]["hospital"] == "h-a"
    assert report["metadata"]["num_samples"] == 100
    assert report["metadata"]["extra"] == {"site": "north", "scanner": "GE"}
    assert report["metadata"]["spec"]["arch"] == "resnet18"
    text = cli("vector", "inspect", vectors[0])
    assert text.exit_code == 0 and "h-a" in text.stdout and "l2_norm" in text.stdout


def test_validate_accepts_a_good_vector(
    cli: Cli, models: dict[str, Path], vectors: list[Path]
) -> None:
    result = cli("vector", "validate", "--base", models["base"], vectors[0])
    assert result.exit_code == 0, result.stderr
    assert "is valid" in result.stdout
    report = cli("vector", "validate", "--base", models["base"], vectors[0], "--json").json()
    assert report["valid"] is True and report["num_tensors"] > 50


def test_validate_rejects_with_the_reason(
    cli: Cli, models: dict[str, Path], vectors: list[Path], tmp_path: Path
) -> None:
    other = cli("vector", "validate", "--base", models["other_base"], vectors[0])
    assert_one_line_error(other, 6, "incompatible_base", "sha256")

    norm = cli("vector", "validate", "--base", models["base"], vectors[0], "--max-norm", "1e-6")
    assert_one_line_error(norm, 6, "vector_norm_exceeded")

    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(vectors[0].read_bytes()[:-100])
    truncated = cli("vector", "validate", "--base", models["base"], cut, "--json")
    assert truncated.exit_code == 6
    assert truncated.json()["code"] == "vector_malformed"

    model_not_vector = cli("vector", "validate", "--base", models["base"], models["a"])
    assert_one_line_error(model_not_vector, 6, "vector_wrong_format")


def test_create_refuses_bad_meta(cli: Cli, models: dict[str, Path], tmp_path: Path) -> None:
    result = cli(
        "vector", "create", "--base", models["base"], "--finetuned", models["a"],
        "-o", tmp_path / "v.safetensors", "--meta", "novalue",
    )  # fmt: skip
    assert_one_line_error(result, 1, "key=value")


def test_merge_weighted_mean_by_samples(
    cli: Cli, models: dict[str, Path], vectors: list[Path], tmp_path: Path
) -> None:
    out = tmp_path / "merged.safetensors"
    result = cli("merge", "--base", models["base"], "-o", out, *vectors, "--json")
    assert result.exit_code == 0, result.stderr
    assert result.json()["weights"] == [100.0, 300.0]

    merged, spec = load_model_file(out)
    assert spec == SPEC
    base = load_model_file(models["base"])[0].state_dict()
    a = load_model_file(models["a"])[0].state_dict()
    b = load_model_file(models["b"])[0].state_dict()
    for key, value in merged.state_dict().items():
        if value.is_floating_point():
            expected = base[key] + (1 * (a[key] - base[key]) + 3 * (b[key] - base[key])) / 4
            torch.testing.assert_close(value, expected, rtol=1e-5, atol=1e-6)
        else:
            assert torch.equal(value, base[key])


def test_merge_ties_and_median(
    cli: Cli, models: dict[str, Path], vectors: list[Path], tmp_path: Path
) -> None:
    ties = cli(
        "merge", "--base", models["base"], "--strategy", "ties", "--density", "0.5",
        "--lambda", "0.5", "-o", tmp_path / "ties.safetensors", *vectors,
    )  # fmt: skip
    assert ties.exit_code == 0, ties.stderr
    assert "ties" in ties.stdout
    median = cli(
        "merge", "--base", models["base"], "--strategy", "median",
        "-o", tmp_path / "median.safetensors", *vectors, "--json",
    )  # fmt: skip
    plain = cli(
        "merge", "--base", models["base"], "--weights", "1,1",
        "-o", tmp_path / "mean.safetensors", *vectors,
    )  # fmt: skip
    assert median.exit_code == plain.exit_code == 0
    # the median of two vectors is their mean
    m = load_model_file(tmp_path / "median.safetensors")[0].state_dict()
    p = load_model_file(tmp_path / "mean.safetensors")[0].state_dict()
    for key in m:
        torch.testing.assert_close(m[key], p[key], rtol=1e-5, atol=1e-6)


def test_merge_errors_are_one_line(
    cli: Cli, models: dict[str, Path], vectors: list[Path], tmp_path: Path
) -> None:
    out = tmp_path / "x.safetensors"
    wrong_param = cli("merge", "--base", models["base"], "--density", "0.3", "-o", out, *vectors)
    assert_one_line_error(wrong_param, 1, "weighted_mean", "density")
    count = cli("merge", "--base", models["base"], "--weights", "1,2,3", "-o", out, *vectors)
    assert_one_line_error(count, 1, "3 weights given for 2 vectors")
    other = cli("merge", "--base", models["other_base"], "-o", out, *vectors)
    assert_one_line_error(other, 1, "base sha256")
    assert not out.exists()


def test_cli_offers_every_strategy() -> None:
    assert list(STRATEGY_NAMES) == list_strategies()


@pytest.fixture(scope="module")
def calibration_npz(datasets_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """200 real PneumoniaMNIST validation images (grey, like the model)."""
    with np.load(datasets_dir / "pneumoniamnist.npz") as data:
        arrays = {"val_images": data["val_images"][:200], "val_labels": data["val_labels"][:200]}
    path = tmp_path_factory.mktemp("calibration") / "calib.npz"
    np.savez(path, **arrays)
    return path


def test_merge_with_calibration_recomputes_batchnorm_statistics(
    cli: Cli, models: dict[str, Path], vectors: list[Path], calibration_npz: Path, tmp_path: Path
) -> None:
    plain_out, calibrated_out = tmp_path / "plain.safetensors", tmp_path / "cal.safetensors"
    plain = cli("merge", "--base", models["base"], "-o", plain_out, *vectors)
    calibrated = cli(
        "merge", "--base", models["base"], "-o", calibrated_out, *vectors,
        "--calibration", calibration_npz, "--json",
    )  # fmt: skip
    assert plain.exit_code == calibrated.exit_code == 0, calibrated.stderr
    record = {"layers": 20, "images": 200, "source": "calib.npz", "split": "val"}
    assert calibrated.json()["calibration"] == record
    assert calibrated.json()["sha256"] == sha256_file(calibrated_out)
    phases = [line.split(":")[0] for line in calibrated.error_lines()]  # a log's lines
    assert phases[0].startswith("merge 2 vectors") and phases[-1] == "recalibrate", phases
    provenance = read_model_provenance(calibrated_out)
    assert provenance["calibration"] == record and provenance["lineage"]["strategy"]

    expected = load_model_file(plain_out)[0]
    recalibrate_bn(expected, load_npz(calibration_npz, "val", in_channels=1), device="cpu")
    averaged = load_model_file(plain_out)[0].state_dict()
    got = load_model_file(calibrated_out)[0].state_dict()
    for key, value in expected.state_dict().items():
        if is_running_stat(key):
            assert torch.equal(got[key], value), key  # recalibrate_bn's own result
            assert not torch.allclose(got[key], averaged[key]), key  # not the average
        elif value.is_floating_point():
            assert torch.equal(got[key], averaged[key]), key  # weights untouched

    train_only = tmp_path / "train-only.npz"
    with np.load(calibration_npz) as data:
        np.savez(train_only, train_images=data["val_images"], train_labels=data["val_labels"])
    fallback = cli(
        "merge", "--base", models["base"], "-o", tmp_path / "t.safetensors", *vectors,
        "--calibration", train_only, "--json",
    )  # fmt: skip
    assert fallback.exit_code == 0, fallback.stderr
    assert fallback.json()["calibration"]["split"] == "train"


def test_merge_calibration_file_errors_are_one_line(
    cli: Cli, models: dict[str, Path], vectors: list[Path], tmp_path: Path
) -> None:
    out = tmp_path / "x.safetensors"
    not_npz = tmp_path / "notes.npz"
    not_npz.write_text("not an archive")
    test_only = tmp_path / "test-only.npz"
    np.savez(test_only, test_images=np.zeros((4, 28, 28), np.uint8), test_labels=np.zeros(4))
    cases = [
        (tmp_path / "missing.npz", [], "no such file"),
        (not_npz, [], "is not a readable .npz file"),
        (test_only, [], "has no val or train images (splits: test)"),
        (test_only, ["--calibration-split", "val"], "has no val images"),
    ]
    for path, extra, message in cases:
        result = cli(
            "merge", "--base", models["base"], "-o", out, *vectors, "--calibration", path, *extra
        )
        assert_one_line_error(result, 1, message)
        assert not out.exists()
