"""medvec train / eval / predict on real MedMNIST data with a tiny CPU model."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from rich.progress import Progress

from hospital_cli import output
from medvec.hashing import sha256_file
from medvec.training_config import TrainConfig
from medvec.vectors import load_vector, read_vector_metadata
from tests.cli.conftest import CliResult, Hospital, Registry, assert_one_line_error, login

pytestmark = pytest.mark.slow

TRAIN = ["--epochs", "2", "--lr", "0.01", "--batch-size", "64", "--device", "cpu"]
Cli = Callable[..., CliResult]
RECIPE_OPTIONS = (
    "optimizer", "schedule", "lr", "weight_decay", "warmup", "label_smoothing", "augment",
    "batch_size",
)  # fmt: skip


@pytest.fixture()
def logged_in(cli: Cli, registry: Registry, hospital: Hospital, base_record: dict) -> Cli:
    login(cli, registry, hospital.token)
    pulled = cli("base", "pull", "--id", str(base_record["id"]))
    assert pulled.exit_code == 0, pulled.stderr
    return cli


@pytest.fixture(scope="module")
def pneumonia(datasets_dir: Path) -> Path:
    return datasets_dir / "pneumoniamnist.npz"


@pytest.fixture()
def offline(cli: Cli, tiny_base: Path) -> Callable[..., CliResult]:
    """`medvec train` with an explicit base file and hospital name: no registry needed."""

    def run(*args: Any) -> CliResult:
        return cli(*args, "--base", tiny_base, "--hospital", "offline-hospital")

    return run


def _eval(cli: Cli, model: Path | str, data: Path, *extra: str) -> dict[str, Any]:
    result = cli("eval", "--model", model, "--data", data, "--json", *extra)
    assert result.exit_code == 0, result.stderr
    return dict(result.json())


def _norm(tensors: dict[str, torch.Tensor]) -> float:
    return math.sqrt(sum(float((t.double() ** 2).sum()) for t in tensors.values()))


def test_train_improves_over_base_and_push_round_trip(
    logged_in: Cli, hospital: Hospital, base_record: dict, pneumonia: Path, tmp_path: Path
) -> None:
    cli = logged_in
    vector, model = tmp_path / "v.safetensors", tmp_path / "ft.safetensors"
    trained = cli(
        "train", "--data", pneumonia, "-o", vector, "--save-model", model,
        "--max-samples", "1500", *TRAIN, "--meta", "site=ward-4", "--json",
    )  # fmt: skip
    assert trained.exit_code == 0, trained.stderr
    body = trained.json()
    meta = body["metadata"]
    assert meta == json.loads(read_vector_metadata(vector).model_dump_json())
    assert meta["base_sha256"] == base_record["sha256"]
    assert meta["base_id"] == str(base_record["id"])
    assert meta["hospital"] == hospital.name  # asked from the registry
    assert meta["num_samples"] == sum(meta["label_histogram"].values()) == 1350
    assert set(meta["label_histogram"]) == {"0", "1"}
    assert meta["training"]["epochs"] == 2 and meta["training"]["device"] == "cpu"
    assert meta["extra"] == {"site": "ward-4"}
    assert meta["privacy"] == {}
    saved = json.loads(Path(body["metrics_path"]).read_text())
    assert saved["n"] == 150 and saved["metrics"]["n"] == 150
    assert 0.0 <= saved["metrics"]["accuracy"] <= 1.0

    # the vector is exactly the fine-tuned model minus the base, on floating tensors
    from medvec.models import load_model_file

    tensors = load_vector(vector)[0]
    base_state = load_model_file(base_record["path"])[0].state_dict()
    tuned_state = load_model_file(model)[0].state_dict()
    assert set(tensors) == {k for k, v in base_state.items() if v.is_floating_point()}
    for key, delta in tensors.items():
        torch.testing.assert_close(base_state[key] + delta, tuned_state[key])

    # held-out test split: the fine-tuned model beats the base it started from
    base_metrics, tuned = _eval(cli, base_record["path"], pneumonia), _eval(cli, model, pneumonia)
    assert tuned["n"] == base_metrics["n"] == 624
    assert tuned["accuracy"] > base_metrics["accuracy"] + 0.05
    assert tuned["auc_macro"] > base_metrics["auc_macro"]

    pushed = cli("push", vector, "--json")
    assert pushed.exit_code == 0, pushed.stderr
    assert pushed.json()["vector"]["sha256"] == sha256_file(vector)
    assert pushed.json()["vector"]["status"] != "rejected"


def test_eval_prints_the_full_metric_set(cli: Cli, tiny_base: Path, pneumonia: Path) -> None:
    metrics = _eval(cli, tiny_base, pneumonia, "--split", "val")
    matrix = np.array(metrics["confusion_matrix"])
    assert metrics["n"] == int(matrix.sum()) == 524
    assert metrics["accuracy"] == pytest.approx(np.trace(matrix) / matrix.sum())
    recall = np.diag(matrix) / matrix.sum(axis=1)
    assert metrics["sensitivity"] == pytest.approx(recall.tolist())
    assert metrics["balanced_accuracy"] == pytest.approx(recall.mean())
    for key in ("auc_macro", "f1_macro", "ece"):
        assert 0.0 <= metrics[key] <= 1.0
    assert len(metrics["specificity"]) == 2

    table = cli("eval", "--model", tiny_base, "--data", pneumonia)
    assert table.exit_code == 0, table.stderr
    for word in ("accuracy", "auc_macro", "sensitivity", "confusion matrix"):
        assert word in table.stdout


def test_dp_clip_bound_and_noise_scale(offline: Cli, pneumonia: Path, tmp_path: Path) -> None:
    cli = offline
    common = ["train", "--data", pneumonia, "--max-samples", "300", *TRAIN, "--json"]
    plain = cli(*common, "-o", tmp_path / "p.safetensors")
    assert plain.exit_code == 0, plain.stderr
    raw = load_vector(tmp_path / "p.safetensors")[0]
    raw_norm = _norm(raw)
    clip, sigma = raw_norm / 4, 0.5  # a bound the vector really exceeds

    clipped = cli(*common, "-o", tmp_path / "c.safetensors", "--dp-clip", clip)
    assert clipped.exit_code == 0, clipped.stderr
    assert clipped.json()["metadata"]["privacy"]["dp_clip"] == pytest.approx(clip)
    tensors = load_vector(tmp_path / "c.safetensors")[0]
    assert _norm(tensors) == pytest.approx(clip, rel=1e-4)  # clipped onto the bound
    for key, value in tensors.items():  # the same seeded run, scaled: direction kept
        torch.testing.assert_close(value, raw[key] * (clip / raw_norm), rtol=1e-4, atol=1e-7)

    noisy = cli(*common, "-o", tmp_path / "n.safetensors", "--dp-clip", clip, "--dp-noise", sigma)
    assert noisy.exit_code == 0, noisy.stderr
    privacy = noisy.json()["metadata"]["privacy"]
    assert privacy["dp_noise"] == sigma and privacy["delta"] == 1e-5
    assert privacy["noise_std"] == pytest.approx(sigma * clip)
    from medvec.privacy import gaussian_epsilon

    assert privacy["epsilon"] == pytest.approx(gaussian_epsilon(sigma, privacy["delta"]))
    assert "epsilon" in noisy.stderr or "epsilon" in json.dumps(privacy)
    noisy_tensors = load_vector(tmp_path / "n.safetensors")[0]
    noise = torch.cat([(noisy_tensors[k] - t).flatten() for k, t in tensors.items()])
    assert float(noise.std()) == pytest.approx(sigma * clip, rel=0.05)
    assert abs(float(noise.mean())) < 0.05 * sigma * clip
    # ||clipped + noise||^2 = C^2 + d (sigma C)^2 in expectation
    expected = math.sqrt(clip**2 + noise.numel() * (sigma * clip) ** 2)
    assert _norm(noisy_tensors) == pytest.approx(expected, rel=0.05)

    needs_clip = cli(*common, "-o", tmp_path / "x.safetensors", "--dp-noise", sigma)
    assert_one_line_error(needs_clip, 1, "--dp-clip")


def _integers(value: Any) -> set[int]:
    """Every integer anywhere in a metadata document: each one could be a seed."""
    if isinstance(value, dict):
        return set().union(set(), *(_integers(v) for v in value.values()))
    if isinstance(value, list):
        return set().union(set(), *(_integers(v) for v in value))
    if isinstance(value, str):
        return {int(value)} if value.isdigit() else set()
    return {value} if isinstance(value, int) and not isinstance(value, bool) else set()


def _seeded_noise(tensors: dict[str, torch.Tensor], std: float, seed: int) -> dict[str, Any]:
    """The noise a generator seeded ``seed`` draws: float32 normals in the tensors' order,
    as `medvec train` drew it from its recorded --seed before issue 22."""
    generator = torch.Generator().manual_seed(seed)
    return {k: torch.randn(t.shape, generator=generator) * std for k, t in tensors.items()}


def test_vector_noise_is_new_each_run_and_nothing_recorded_removes_it(
    offline: Cli, pneumonia: Path, tmp_path: Path
) -> None:
    """The same seeded run twice: the training is the same, the noise is not, and no
    integer the vector records (its --seed included) regenerates the noise."""
    clip, sigma = 0.05, 0.5
    common = [
        "train", "--data", pneumonia, "--max-samples", "200", "--epochs", "1", "--lr", "0.01",
        "--batch-size", "64", "--device", "cpu", "--seed", "7", "--dp-clip", clip, "--json",
    ]  # fmt: skip
    assert offline(*common, "-o", tmp_path / "c.safetensors").exit_code == 0
    clipped = load_vector(tmp_path / "c.safetensors")[0]
    noises, metadata = [], []
    for name in ("n1", "n2"):
        run = offline(*common, "--dp-noise", sigma, "-o", tmp_path / f"{name}.safetensors")
        assert run.exit_code == 0, run.stderr
        noisy = load_vector(tmp_path / f"{name}.safetensors")[0]
        noises.append(torch.cat([(noisy[k] - t).flatten() for k, t in clipped.items()]))
        metadata.append(run.json()["metadata"])
    assert float(noises[0].std()) == pytest.approx(sigma * clip, rel=0.15)
    correlation = float(torch.corrcoef(torch.stack(noises).double())[0, 1])
    assert abs(correlation) < 0.2  # independent draws (|r| ~ 1/sqrt(d) here)

    noisy = load_vector(tmp_path / "n1.safetensors")[0]
    assert not any("seed" in key for key in metadata[0]["privacy"])
    candidates = _integers(metadata[0]) | {metadata[0]["training"]["seed"]}
    assert 7 in candidates
    for seed in candidates:
        regenerated = _seeded_noise(noisy, sigma * clip, seed)
        left = {k: noisy[k] - regenerated[k] for k in noisy}
        assert _norm(left) > 10 * _norm(clipped), seed  # the noise is still there


def test_dp_sgd_records_the_accountants_epsilon(
    offline: Cli, pneumonia: Path, tmp_path: Path
) -> None:
    out = tmp_path / "dp.safetensors"
    result = offline(
        "train", "--data", pneumonia, "--max-samples", "400", *TRAIN, "-o", out,
        "--dp-sgd", "--dp-clip", "1.0", "--dp-noise", "1.1", "--dp-delta", "1e-4", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    privacy = read_vector_metadata(out).privacy
    assert privacy["dp_sgd"] is True
    assert privacy["delta"] == 1e-4
    assert privacy["dp_clip"] == 1.0 and privacy["dp_noise"] == 1.1
    # an independent accountant (Opacus' RDP) on the recorded sampling gives the same epsilon
    from opacus.accountants import RDPAccountant

    accountant = RDPAccountant()
    accountant.history = [(1.1, privacy["sample_rate"], privacy["steps"])]
    assert privacy["sample_rate"] == pytest.approx(64 / 360, rel=0.1)  # Opacus: 1 / batches
    assert privacy["steps"] >= 2 * (360 // 64)
    independent = accountant.get_epsilon(delta=1e-4)
    assert 0 < privacy["epsilon"] < 50
    assert privacy["epsilon"] == pytest.approx(independent, rel=0.15)


def test_step_budget_drives_the_run_and_its_progress(
    offline: Cli, pneumonia: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bars: list[Progress] = []
    make_bar = output.progress_steps

    def recording_bar(**kwargs: Any) -> Progress:
        bars.append(make_bar(**kwargs))
        return bars[-1]

    monkeypatch.setattr(output, "progress_steps", recording_bar)
    out = tmp_path / "steps.safetensors"
    result = offline(
        "train", "--data", pneumonia, "--max-samples", "300", "--batch-size", "64",
        "--steps", "25", "--device", "cpu", "-o", out, "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    training = read_vector_metadata(out).training
    assert training["steps"] == 25 and training["epochs"] == 1
    # 270 training images are 5 batches: one epoch would be 5 steps, the budget is 5 passes
    (task,) = bars[0].tasks
    assert task.total == task.completed == 25
    # stderr is not a terminal here, as in `medvec train ... > run.log 2>&1`: plain lines
    assert result.json()["vector"] == str(out)  # stdout stays one JSON document
    steps = [line for line in result.error_lines() if line.startswith("train: ")]
    counts = [int(line.split()[1].split("/")[0]) for line in steps]
    assert counts == sorted(counts) and counts[-1] == 25, steps
    assert 2 <= len(steps) <= 11, steps  # its start, each tenth, never a line per step
    assert "(100%) loss" in steps[-1], steps[-1]
    assert not any("nan" in line for line in steps), steps  # no reading yet is no number


def test_recipe_options_are_recorded_in_the_vector(
    offline: Cli, pneumonia: Path, tmp_path: Path
) -> None:
    out = tmp_path / "recipe.safetensors"
    result = offline(
        "train", "--data", pneumonia, "--max-samples", "200", "--device", "cpu", "-o", out,
        "--optimizer", "adamw", "--schedule", "constant", "--lr", "0.002",
        "--weight-decay", "0.05", "--warmup", "0.2", "--label-smoothing", "0.1",
        "--no-augment", "--batch-size", "32", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    training = read_vector_metadata(out).training
    assert set(TrainConfig.model_fields) <= set(training)  # the whole recipe, defaults too
    assert {k: training[k] for k in RECIPE_OPTIONS} == {
        "optimizer": "adamw", "schedule": "constant", "lr": 0.002, "weight_decay": 0.05,
        "warmup": 0.2, "label_smoothing": 0.1, "augment": False, "batch_size": 32,
    }  # fmt: skip
    assert training["steps"] is None and training["momentum"] == TrainConfig().momentum


def test_refused_recipes_name_their_option(offline: Cli, pneumonia: Path, tmp_path: Path) -> None:
    common = ["train", "--data", pneumonia, "--device", "cpu", "-o", tmp_path / "x.safetensors"]
    assert_one_line_error(offline(*common, "--warmup", "1.5"), 1, "--warmup", "less than 1")
    assert_one_line_error(offline(*common, "--label-smoothing", "1"), 1, "--label-smoothing")
    dp = ["--dp-sgd", "--dp-clip", "1.0", "--dp-noise", "1.0", "--steps", "10"]
    assert_one_line_error(offline(*common, *dp), 1, "DP-SGD budgets are in epochs", "steps")
    assert not (tmp_path / "x.safetensors").exists()
    wrong = offline(*common, "--optimizer", "rmsprop")
    assert wrong.exit_code == 2 and "rmsprop" in wrong.stderr


def _write_pngs(images: np.ndarray, labels: np.ndarray, root: Path) -> list[Path]:
    paths = []
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        folder = root / f"class{int(label)}"
        folder.mkdir(parents=True, exist_ok=True)
        paths.append(folder / f"img{i:04d}.png")
        Image.fromarray(image.squeeze()).save(paths[-1])
    return paths


def test_train_on_an_image_folder(offline: Cli, pneumonia: Path, tmp_path: Path) -> None:
    arrays = np.load(pneumonia)
    images, labels = arrays["train_images"][:240], arrays["train_labels"].reshape(-1)[:240]
    _write_pngs(images, labels, tmp_path / "xrays")
    out = tmp_path / "folder.safetensors"
    result = offline(
        "train", "--data", tmp_path / "xrays", "-o", out, *TRAIN, "--val-fraction", "0.25",
        "--no-augment", "--seed", "3", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    meta = read_vector_metadata(out)
    assert meta.num_samples == 180
    assert sum(meta.label_histogram.values()) == 180
    assert meta.training["data"] == "xrays"
    assert meta.training["augment"] is False and meta.training["seed"] == 3


def test_train_on_dicom_with_a_labels_csv(offline: Cli, pneumonia: Path, tmp_path: Path) -> None:
    from pydicom import Dataset
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    arrays = np.load(pneumonia)
    images, labels = arrays["train_images"][:120], arrays["train_labels"].reshape(-1)[:120]
    root = tmp_path / "dicom"
    root.mkdir()
    rows = []
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        file_meta = FileMetaDataset()
        file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
        file_meta.MediaStorageSOPInstanceUID = generate_uid()
        file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = file_meta
        ds.SOPClassUID, ds.SOPInstanceUID = file_meta.MediaStorageSOPClassUID, generate_uid()
        ds.Modality, ds.PatientID = "CR", f"anon-{i}"
        ds.Rows, ds.Columns = image.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
        ds.PixelData = image.astype(np.uint8).tobytes()
        ds.save_as(root / f"scan{i:03d}.dcm", enforce_file_format=True)
        rows.append({"file": f"scan{i:03d}.dcm", "label": ["normal", "pneumonia"][int(label)]})
    with (root / "labels.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["file", "label"])
        writer.writeheader()
        writer.writerows(rows)
    out = tmp_path / "dicom.safetensors"
    result = offline("train", "--data", root, "-o", out, *TRAIN, "--val-fraction", "0.25")
    assert result.exit_code == 0, result.stderr
    meta = read_vector_metadata(out)
    assert meta.num_samples == 90
    assert sum(meta.label_histogram.values()) == 90
    assert set(meta.label_histogram) == {"0", "1"}


def test_predict_pngs_agrees_with_eval(
    cli: Cli, offline: Cli, tmp_path: Path, pneumonia: Path
) -> None:
    arrays = np.load(pneumonia)
    images, labels = arrays["test_images"][:8], arrays["test_labels"].reshape(-1)[:8]
    paths = _write_pngs(images, labels, tmp_path / "png")
    model = tmp_path / "ft.safetensors"
    trained = offline(
        "train", "--data", pneumonia, "--max-samples", "600", *TRAIN,
        "-o", tmp_path / "v.safetensors", "--save-model", model,
    )  # fmt: skip
    assert trained.exit_code == 0, trained.stderr
    result = cli("predict", "--model", model, *paths, "--json", "--labels", "normal,pneumonia")
    assert result.exit_code == 0, result.stderr
    rows = result.json()
    assert [r["image"] for r in rows] == [str(p) for p in paths]
    assert all(r["class"] in ("normal", "pneumonia") and 0.5 <= r["confidence"] <= 1 for r in rows)

    # the same images through the core's evaluation path give the same classes
    from medvec.data import ImageArrayDataset
    from medvec.evaluation import predict
    from medvec.models import load_model_file

    net, spec = load_model_file(model)
    dataset = ImageArrayDataset(images, labels, spec.in_channels)
    expected = predict(net, dataset, device=torch.device("cpu"), batch_size=8)
    assert [r["class_index"] for r in rows] == np.asarray(expected.probs).argmax(1).tolist()
    table = cli("predict", "--model", model, paths[0], "--labels", "normal,pneumonia")
    assert table.exit_code == 0 and "confidence" in table.stdout
