"""The in-process simulation and `medvec simulate` on real MedMNIST data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import get_args

import pytest
import torch

from hospital_cli.main import main
from medvec.models import ModelSpec, load_model_file, read_model_provenance
from medvec.pretrain import PretrainConfig, ensure_base, pretrain_arch
from medvec.simulation import SimulationConfig, run_simulation, summary_row
from tests.e2e.tiny import ensure_registered

PRETRAIN = PretrainConfig(max_samples=256, steps=16, batch_size=32).excluding("bloodmnist")


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory: pytest.TempPathFactory, datasets_dir: Path) -> Path:
    arch = ensure_registered()
    cache = tmp_path_factory.mktemp("cache")
    spec = ModelSpec(arch=arch, num_classes=8, in_channels=3, image_size=28)
    config = PRETRAIN.model_copy(update={"arch": arch})
    return ensure_base(spec, cache, config=config, datasets_dir=datasets_dir)


def test_base_is_pretrained_on_the_other_sets_and_cached(
    tiny_base: Path, datasets_dir: Path
) -> None:
    """A BloodMNIST base learns OrganAMNIST's 11 and PneumoniaMNIST's 2 classes in one
    joint label space, never BloodMNIST itself, and is re-headed for its 8 classes."""
    provenance = read_model_provenance(tiny_base)
    assert provenance["pretraining"]["sources"] == ["organamnist", "pneumoniamnist"]
    assert provenance["pretraining"]["steps"] == 16
    pretrained = next(tiny_base.parent.glob("pretrained-organamnist+pneumoniamnist-*.safetensors"))
    assert read_model_provenance(pretrained)["num_samples"] == 2 * 256
    source, source_spec = load_model_file(pretrained)
    base, spec = load_model_file(tiny_base)
    assert (source_spec.num_classes, spec.num_classes) == (13, 8)
    for key, value in base.state_dict().items():
        if value.shape == source.state_dict()[key].shape:
            assert torch.equal(value, source.state_dict()[key]), key
    mtime = tiny_base.stat().st_mtime_ns
    config = PRETRAIN.model_copy(update={"arch": spec.arch})
    again = ensure_base(spec, tiny_base.parent, config=config, datasets_dir=datasets_dir)
    assert again == tiny_base and again.stat().st_mtime_ns == mtime


def test_one_hospital_merges_back_to_its_own_model(tiny_base: Path, datasets_dir: Path) -> None:
    """With N = 1, one generation and no recalibration, the weighted mean and the median
    of one vector are that hospital's model."""
    config = SimulationConfig(
        dataset="bloodmnist", hospitals=1, max_train=200, max_val=100, max_test=200,
        strategies=("weighted_mean", "median", "task_arithmetic"), lambda_multiples=(1.0,),
        centralized=False, generations=1, calibrate=False,
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
        max_val=100, max_test=300, generations=2,
    )  # fmt: skip
    result = run_simulation(config, tiny_base, datasets_dir=datasets_dir, device="cpu")
    kinds = [r["kind"] for r in result.rows]
    assert kinds.count("local") == 4 and kinds.count("centralized") == 1
    for generation in (1, 2):
        merged = [r for r in result.rows if r["kind"] == "merged" and r["generation"] == generation]
        assert sorted(r["strategy"] for r in merged) == sorted(config.strategies)
        # one promoted per generation, chosen on validation (never on test)
        (promoted,) = [r for r in merged if r["promoted"]]
        assert promoted["val_accuracy"] == max(r["val_accuracy"] for r in merged)
        assert promoted == result.promoted(generation)
    assert sum(r["samples"] for r in result.rows if r["kind"] == "local") == 400
    for row in result.rows:
        assert 0.0 <= row["accuracy"] <= 1.0 and 0.0 <= row["f1"] <= 1.0
    lam = result.merged("task_arithmetic")["lambda"]
    assert lam in [pytest.approx(m / 4) for m in config.lambda_multiples]
    summary = summary_row(result)
    assert summary["partition"] == "dirichlet(0.3)" and summary["hospitals"] == 4
    assert summary["local_mean"] == pytest.approx(result.local_mean(), abs=1e-4)
    assert summary["generations"] == 2 and -1.0 <= summary["cosine"] <= 1.0


@pytest.mark.slow
def test_simulate_command_writes_summary(
    tmp_path: Path, datasets_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    arch = ensure_registered()
    out = tmp_path / "sim"
    main(
        [
            "simulate", "--dataset", "pneumoniamnist", "--hospitals", "2", "--arch", arch,
            "--max-train", "200", "--max-test", "200", "--pretrain-samples", "128",
            "--pretrain-steps", "8", "--generations", "1", "--stem", "auto",
            "--output", str(out), "--datasets-dir", str(datasets_dir), "--device", "cpu",
            "--json",
        ]
    )  # fmt: skip
    printed = capsys.readouterr()
    payload = json.loads(printed.out)
    (row,) = payload["summary"]
    assert row["dataset"] == "pneumoniamnist" and row["hospitals"] == 2
    # stderr is a log here: the base's pretraining reports its steps, then each phase
    pretraining = [line for line in printed.err.splitlines() if line.startswith("pretrain ")]
    assert pretraining[0].startswith(f"pretrain pneumoniamnist/{arch}: 1/8 (12%)")
    assert pretraining[-1].startswith(f"pretrain pneumoniamnist/{arch}: 8/8 (100%) loss ")
    phases = [line.split(":")[0] for line in printed.err.splitlines()]
    assert {"base", "point", "local", "merge", "centralized", "row"} <= set(phases), phases
    assert {
        "local_mean",
        "weighted_mean",
        "task_arithmetic",
        "ties",
        "median",
        "centralized",
    } <= set(row)
    assert (out / "summary.csv").read_text().count("\n") == 2
    results = json.loads((out / "results.json").read_text())
    assert results["summary"] == [row]
    # the pretraining the base really had, not the sweep's template (which lists the target)
    (base,) = results["bases"]
    assert (base["dataset"], base["arch"]) == ("pneumoniamnist", arch)
    assert base["pretrain"]["sources"] == ["organamnist", "bloodmnist"]
    assert base["pretrain"]["arch"] == pretrain_arch(arch)
    assert (base["pretrain"]["steps"], base["pretrain"]["max_samples"]) == (8, 128)


def test_cli_defaults_are_the_configs_defaults() -> None:
    """The CLI spells its defaults out (so `--help` imports no torch); they must agree."""
    from hospital_cli.commands.base import PRETRAIN_SOURCES, PRETRAIN_STEPS
    from hospital_cli.commands.simulate import PRETRAIN_DEFAULTS, SIM_DEFAULTS
    from hospital_cli.options import Stem
    from medvec.pretrain import DEFAULT_SOURCES

    sim = SimulationConfig()
    assert {k: getattr(sim, k) for k in SIM_DEFAULTS} == SIM_DEFAULTS
    pretrain = PretrainConfig()
    assert PRETRAIN_DEFAULTS == {"steps": pretrain.steps} and PRETRAIN_STEPS == pretrain.steps
    assert PRETRAIN_SOURCES == DEFAULT_SOURCES == pretrain.sources
    assert {s.value for s in Stem} == set(get_args(ModelSpec.model_fields["stem"].annotation))


def _custom_npz(source: Path, dest: Path, take: int) -> None:
    """A MedMNIST-format file under a name MedVec does not know: the first ``take``
    images of each split of ``source`` (grey, binary)."""
    import numpy as np

    with np.load(source) as data:
        arrays = {key: data[key][:take] for key in data.files}
    np.savez(dest, **arrays)


@pytest.mark.slow
def test_simulate_runs_on_any_medmnist_file_in_the_folder(
    tmp_path: Path, datasets_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A user drops `chestxray.npz` (grey, 2 classes) into the folder: simulate, the
    base's pretraining on the known sets and the report all work on it."""
    folder = tmp_path / "datasets"
    folder.mkdir()
    for name in ("organamnist", "bloodmnist"):
        (folder / f"{name}.npz").symlink_to(datasets_dir / f"{name}.npz")
    _custom_npz(datasets_dir / "pneumoniamnist.npz", folder / "chestxray.npz", 300)
    arch = ensure_registered()
    out = tmp_path / "sim"
    main(
        [
            "simulate", "--dataset", "chestxray", "--hospitals", "3", "--arch", arch,
            "--stem", "auto", "--max-train", "150", "--pretrain-samples", "64",
            "--pretrain-steps", "4", "--pretrain-sources", "organamnist,bloodmnist",
            "--generations", "2", "--output", str(out),
            "--datasets-dir", str(folder), "--device", "cpu", "--json",
        ]
    )  # fmt: skip
    (row,) = json.loads(capsys.readouterr().out)["summary"]
    assert row["dataset"] == "chestxray" and row["generations"] == 2
    assert 0.0 <= row["weighted_mean"] <= 1.0 and 0.0 <= row["centralized"] <= 1.0
    pretrained = list((out / "cache").glob("pretrained-*.safetensors"))
    assert [p.name.split("-")[1] for p in pretrained] == ["organamnist+bloodmnist"]


def test_base_pretrain_command_makes_the_base_once(
    tmp_path: Path, datasets_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`medvec base pretrain` re-heads for the target's classes, never pretrains on the
    target, and a second call returns the cached file untouched."""
    arch = ensure_registered()
    args = [
        "base", "pretrain", "--dataset", "pneumoniamnist", "--arch", arch, "--stem", "auto",
        "--steps", "2", "--max-samples", "64", "--output", str(tmp_path / "bases"),
        "--datasets-dir", str(datasets_dir), "--device", "cpu", "--json",
    ]  # fmt: skip
    main(args)
    first = json.loads(capsys.readouterr().out)
    assert first["spec"]["num_classes"] == 2
    assert first["pretraining"]["sources"] == ["organamnist", "bloodmnist"]
    path = Path(first["path"])
    mtime = path.stat().st_mtime_ns
    main(args)
    again = json.loads(capsys.readouterr().out)
    assert again["path"] == first["path"] and path.stat().st_mtime_ns == mtime
