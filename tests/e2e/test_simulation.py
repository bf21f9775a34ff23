"""The in-process simulation and `medvec simulate` on real MedMNIST data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from hospital_cli.main import main
from medvec.models import ModelSpec, load_model_file, read_model_provenance
from medvec.pretrain import PretrainConfig, ensure_base
from medvec.simulation import SimulationConfig, run_simulation, summary_row
from tests.e2e.tiny import ensure_registered

PRETRAIN = PretrainConfig(max_samples=256, batch_size=32)


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory: pytest.TempPathFactory, datasets_dir: Path) -> Path:
    arch = ensure_registered()
    cache = tmp_path_factory.mktemp("cache")
    spec = ModelSpec(arch=arch, num_classes=8, in_channels=3, image_size=28)
    config = PRETRAIN.model_copy(update={"arch": arch})
    return ensure_base(spec, cache, config=config, datasets_dir=datasets_dir)


def test_base_is_pretrained_on_organamnist_and_cached(tiny_base: Path, datasets_dir: Path) -> None:
    provenance = read_model_provenance(tiny_base)
    assert provenance["pretraining"]["source"] == "organamnist"
    pretrained = next(tiny_base.parent.glob("pretrained-organamnist-*.safetensors"))
    source, source_spec = load_model_file(pretrained)
    base, spec = load_model_file(tiny_base)
    assert (source_spec.num_classes, spec.num_classes) == (11, 8)
    for key, value in base.state_dict().items():
        if value.shape == source.state_dict()[key].shape:
            assert torch.equal(value, source.state_dict()[key]), key
    mtime = tiny_base.stat().st_mtime_ns
    config = PRETRAIN.model_copy(update={"arch": spec.arch})
    again = ensure_base(spec, tiny_base.parent, config=config, datasets_dir=datasets_dir)
    assert again == tiny_base and again.stat().st_mtime_ns == mtime


def test_one_hospital_merges_back_to_its_own_model(tiny_base: Path, datasets_dir: Path) -> None:
    """With N = 1 the weighted mean and the median of one vector are that hospital's model."""
    config = SimulationConfig(
        dataset="bloodmnist", hospitals=1, max_train=200, max_val=100, max_test=200,
        strategies=("weighted_mean", "median", "task_arithmetic"), lambda_multiples=(1.0,),
        centralized=False,
    )  # fmt: skip
    result = run_simulation(config, tiny_base, datasets_dir=datasets_dir, device="cpu")
    local = [r for r in result.rows if r["kind"] == "local"]
    assert len(local) == 1
    for strategy in ("weighted_mean", "median", "task_arithmetic"):
        assert result.merged(strategy)["accuracy"] == pytest.approx(local[0]["accuracy"])
    assert result.merged("task_arithmetic")["lambda"] == pytest.approx(1.0)


@pytest.mark.slow
def test_dirichlet_simulation_reports_every_model(tiny_base: Path, datasets_dir: Path) -> None:
    config = SimulationConfig(
        dataset="bloodmnist", hospitals=4, partition="dirichlet", alpha=0.3, max_train=400,
        max_val=100, max_test=300,
    )  # fmt: skip
    result = run_simulation(config, tiny_base, datasets_dir=datasets_dir, device="cpu")
    kinds = [r["kind"] for r in result.rows]
    assert kinds.count("local") == 4 and kinds.count("centralized") == 1
    assert sorted(r["strategy"] for r in result.rows if r["kind"] == "merged") == sorted(
        config.strategies
    )
    assert sum(r["samples"] for r in result.rows if r["kind"] == "local") == 400
    for row in result.rows:
        assert 0.0 <= row["accuracy"] <= 1.0 and 0.0 <= row["f1"] <= 1.0
    lam = result.merged("task_arithmetic")["lambda"]
    assert lam in [pytest.approx(m / 4) for m in config.lambda_multiples]
    summary = summary_row(result)
    assert summary["partition"] == "dirichlet(0.3)" and summary["hospitals"] == 4
    assert summary["local_mean"] == pytest.approx(result.local_mean(), abs=1e-4)


@pytest.mark.slow
def test_simulate_command_writes_summary(tmp_path: Path, datasets_dir: Path, capsys) -> None:
    arch = ensure_registered()
    out = tmp_path / "sim"
    main(
        [
            "simulate", "--dataset", "pneumoniamnist", "--hospitals", "2", "--arch", arch,
            "--max-train", "200", "--max-test", "200", "--pretrain-samples", "128",
            "--output", str(out), "--datasets-dir", str(datasets_dir), "--device", "cpu",
            "--json",
        ]
    )  # fmt: skip
    payload = json.loads(capsys.readouterr().out)
    (row,) = payload["summary"]
    assert row["dataset"] == "pneumoniamnist" and row["hospitals"] == 2
    assert {
        "local_mean",
        "weighted_mean",
        "task_arithmetic",
        "ties",
        "median",
        "centralized",
    } <= set(row)
    assert (out / "summary.csv").read_text().count("\n") == 2
    assert json.loads((out / "results.json").read_text())["summary"] == [row]
