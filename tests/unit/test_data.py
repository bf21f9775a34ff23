"""Dataset readers on real MedMNIST data: .npz, image folders (Pillow) and DICOM (pydicom)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import Subset

from medvec.data import (
    DATASETS_ENV,
    ImageArrayDataset,
    batch_arrays,
    load_dataset,
    load_medmnist,
    normalize_batch,
    read_dicom,
    resolve_datasets_dir,
    train_transform,
)
from medvec.errors import DatasetError


@pytest.fixture(scope="module")
def pneumonia(datasets_dir: Path) -> dict[str, np.ndarray]:
    with np.load(datasets_dir / "pneumoniamnist.npz") as archive:
        return {k: archive[k] for k in ("test_images", "test_labels")}


@pytest.mark.parametrize(
    ("name", "classes", "channels"),
    [("pneumoniamnist", 2, 1), ("bloodmnist", 8, 3), ("organamnist", 11, 1)],
)
def test_load_each_real_dataset(datasets_dir: Path, name: str, classes: int, channels: int) -> None:
    dataset = load_medmnist(name, "val", datasets_dir)
    with np.load(datasets_dir / f"{name}.npz") as archive:
        raw_images, raw_labels = archive["val_images"], archive["val_labels"]
    assert len(dataset) == len(raw_images)
    assert dataset.labels.shape == (len(raw_images),) and dataset.labels.dtype == torch.int64
    assert torch.equal(dataset.labels, torch.from_numpy(raw_labels.reshape(-1).astype(np.int64)))
    assert dataset.num_classes == classes and dataset.in_channels == channels
    image, label = dataset[3]
    assert image.shape == (channels, 28, 28) and image.dtype == torch.float32
    assert int(label) == int(raw_labels.reshape(-1)[3])
    assert float(image.min()) >= -1.0 and float(image.max()) <= 1.0


def test_rgb_is_channels_last_on_disk_and_channels_first_in_items(datasets_dir: Path) -> None:
    with np.load(datasets_dir / "bloodmnist.npz") as archive:
        raw = archive["test_images"][:5]
    assert raw.shape == (5, 28, 28, 3)
    dataset = ImageArrayDataset(raw, np.arange(5), None)
    image, _ = dataset[2]
    expected = normalize_batch(torch.from_numpy(raw[2]).permute(2, 0, 1).float() / 255)
    assert torch.allclose(image, expected)
    # channel 0 of the item is the red plane of the file, not a row of pixels
    assert torch.allclose(image[0], (torch.from_numpy(raw[2][..., 0]).float() / 255 - 0.5) / 0.5)


def test_grey_repeated_to_three_channels(pneumonia: dict[str, np.ndarray]) -> None:
    dataset = ImageArrayDataset(pneumonia["test_images"][:4], pneumonia["test_labels"][:4], 3)
    image, _ = dataset[1]
    assert image.shape == (3, 28, 28)
    assert torch.equal(image[0], image[1]) and torch.equal(image[1], image[2])
    grey = (torch.from_numpy(pneumonia["test_images"][1]).float() / 255 - 0.5) / 0.5
    assert torch.allclose(image[0], grey)


def test_label_shapes_normalised_and_bad_shapes_refused(pneumonia: dict[str, np.ndarray]) -> None:
    images, labels = pneumonia["test_images"][:6], pneumonia["test_labels"][:6]
    assert labels.shape == (6, 1)
    column = ImageArrayDataset(images, labels)
    flat = ImageArrayDataset(images, labels.reshape(-1))
    assert torch.equal(column.labels, flat.labels) and column.labels.shape == (6,)
    with pytest.raises(DatasetError, match="expected \\(N,\\) or \\(N, 1\\)"):
        ImageArrayDataset(images, np.zeros((6, 3), dtype=np.int64))
    with pytest.raises(DatasetError, match="6 images but 5 labels"):
        ImageArrayDataset(images, labels[:5])
    with pytest.raises(DatasetError, match="uint8"):
        ImageArrayDataset(images.astype(np.float32), labels)


def test_resize_at_construction(pneumonia: dict[str, np.ndarray]) -> None:
    dataset = ImageArrayDataset(pneumonia["test_images"][:3], pneumonia["test_labels"][:3], 3, 32)
    assert dataset.pixels.shape == (3, 1, 32, 32) and dataset.image_size == 32
    assert dataset[0][0].shape == (3, 32, 32)


def test_resolve_datasets_dir_env_and_clear_error(
    datasets_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(DATASETS_ENV, str(datasets_dir))
    assert resolve_datasets_dir() == datasets_dir
    assert len(load_medmnist("pneumoniamnist", "test")) == 624
    monkeypatch.delenv(DATASETS_ENV)
    with pytest.raises(DatasetError) as missing_env:
        resolve_datasets_dir()
    assert DATASETS_ENV in str(missing_env.value)
    with pytest.raises(DatasetError) as missing_file:
        load_medmnist("dermamnist", "train", tmp_path)
    assert "dermamnist.npz" in str(missing_file.value) and str(tmp_path) in str(missing_file.value)
    with pytest.raises(DatasetError, match="no 'holdout' split"):
        load_medmnist("pneumoniamnist", "holdout", datasets_dir)


def test_load_dataset_npz_and_subset_batches(datasets_dir: Path) -> None:
    dataset = load_dataset(datasets_dir / "pneumoniamnist.npz", split="test", in_channels=3)
    subset = Subset(Subset(dataset, list(range(100, 200))), [5, 7, 9])
    found = batch_arrays(subset)
    assert found is not None
    base, indices = found
    assert base is dataset and indices.tolist() == [105, 107, 109]
    images, labels = base.batch(indices)
    assert torch.equal(images[1], subset[1][0]) and int(labels[2]) == int(subset[2][1])


def test_augmentation_flips_and_crops_but_keeps_shape_and_seeds(datasets_dir: Path) -> None:
    dataset = load_medmnist("bloodmnist", "test", datasets_dir)
    pixels = dataset.pixels[:64]
    plain = train_transform(pixels, 3)
    first = train_transform(pixels, 3, augment=True, generator=torch.Generator().manual_seed(1))
    again = train_transform(pixels, 3, augment=True, generator=torch.Generator().manual_seed(1))
    assert first.shape == plain.shape and torch.equal(first, again)
    changed = (first != plain).flatten(1).any(1)
    assert 0 < int(changed.sum()) <= 64
    # flips and reflect-padded crops only move pixels: no value outside the originals' range
    assert float(first.min()) >= float(plain.min()) and float(first.max()) <= float(plain.max())


def _write_png_folder(root: Path, images: np.ndarray, labels: np.ndarray) -> None:
    from PIL import Image

    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        folder = root / ("normal" if label == 0 else "pneumonia")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"img{i:03d}.png")


def test_image_folder_of_real_pngs(pneumonia: dict[str, np.ndarray], tmp_path: Path) -> None:
    images, labels = pneumonia["test_images"][:12], pneumonia["test_labels"][:12].reshape(-1)
    assert len(set(labels.tolist())) == 2
    _write_png_folder(tmp_path / "xrays", images, labels)
    dataset = load_dataset(tmp_path / "xrays")
    assert dataset.classes == ["normal", "pneumonia"] and len(dataset) == 12
    assert dataset.in_channels == 1 and dataset.pixels.shape == (12, 1, 28, 28)
    # PNG is lossless: every original image is in the folder with its label
    got = {dataset.pixels[i, 0].numpy().tobytes(): int(dataset.labels[i]) for i in range(12)}
    assert got == {img.tobytes(): int(lab) for img, lab in zip(images, labels, strict=True)}


def test_image_folder_split_subfolder_jpeg_rgb_and_resize(
    datasets_dir: Path, tmp_path: Path
) -> None:
    from PIL import Image

    with np.load(datasets_dir / "bloodmnist.npz") as archive:
        images, labels = archive["test_images"][:6], archive["test_labels"][:6].reshape(-1)
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        folder = tmp_path / "blood" / "test" / f"class{label}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).resize((40, 40)).save(folder / f"{i}.jpg", quality=95)
    dataset = load_dataset(tmp_path / "blood", split="test", image_size=28)
    assert dataset.pixels.shape == (6, 3, 28, 28) and dataset.in_channels == 3
    assert len(dataset.classes or []) == len(set(labels.tolist()))


def _write_dicom(path: Path, pixels: np.ndarray, monochrome1: bool = False) -> None:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "CR"
    ds.set_pixel_data(pixels, "MONOCHROME1" if monochrome1 else "MONOCHROME2", 12)
    ds.save_as(path, enforce_file_format=True)


def _minmax_uint8(image: np.ndarray) -> np.ndarray:
    x = image.astype(np.float64)
    return np.rint((x - x.min()) * 255.0 / (x.max() - x.min())).astype(np.uint8)


def test_dicom_folder_with_labels_csv(pneumonia: dict[str, np.ndarray], tmp_path: Path) -> None:
    images, labels = pneumonia["test_images"][:8], pneumonia["test_labels"][:8].reshape(-1)
    root = tmp_path / "dicom"
    (root / "scans").mkdir(parents=True)
    rows = []
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        name = f"scans/{i}.dcm"
        _write_dicom(root / name, image.astype(np.uint16) * 16)  # 12-bit, as a CR would be
        rows.append({"file": name, "label": ["normal", "pneumonia"][label], "split": "train"})
    rows[-1]["split"] = "test"
    with (root / "labels.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["file", "label", "split"])
        writer.writeheader()
        writer.writerows(rows)
    dataset = load_dataset(root, split="train", in_channels=3)
    assert len(dataset) == 7 and dataset.classes == ["normal", "pneumonia"]
    assert torch.equal(dataset.labels, torch.from_numpy(labels[:7].astype(np.int64)))
    for i in range(7):
        assert np.array_equal(dataset.pixels[i, 0].numpy(), _minmax_uint8(images[i]))
    assert dataset[0][0].shape == (3, 28, 28)


def test_dicom_monochrome1_inverted(pneumonia: dict[str, np.ndarray], tmp_path: Path) -> None:
    image = pneumonia["test_images"][0]
    _write_dicom(tmp_path / "a.dcm", image.astype(np.uint16), monochrome1=True)
    assert np.array_equal(read_dicom(tmp_path / "a.dcm"), 255 - _minmax_uint8(image))


def test_dicom_folder_errors(tmp_path: Path) -> None:
    (tmp_path / "labels.csv").write_text("path,diagnosis\na.dcm,1\n")
    (tmp_path / "a.dcm").write_bytes(b"not dicom")
    with pytest.raises(DatasetError, match="expected file,label"):
        load_dataset(tmp_path)
    (tmp_path / "labels.csv").write_text("file,label\nmissing.dcm,1\n")
    with pytest.raises(DatasetError, match="do not exist"):
        load_dataset(tmp_path)


def test_unknown_layout_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DatasetError, match="cannot tell what kind of dataset"):
        load_dataset(tmp_path)
    with pytest.raises(DatasetError, match="no dataset at"):
        load_dataset(tmp_path / "absent.npz")
