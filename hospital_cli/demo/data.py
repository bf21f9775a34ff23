"""The demo's data: hospital shards and the held-out benchmark, written as MedMNIST ``.npz``.

Each simulated hospital gets its own ``data.npz`` (its private training images); the
registry gets ``benchmark.npz`` with the target's validation split (for tuning) and
test split (for reporting). Shards come from ``medvec.data``'s IID or Dirichlet splits.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medvec.data import resolve_datasets_dir, split_dirichlet, split_iid
from medvec.data.download import ensure_medmnist


@dataclass(frozen=True)
class DemoData:
    source: Path
    shards: list[Path]
    shard_sizes: list[int]
    benchmark: Path
    num_classes: int
    train_total: int


def _capped(n: int, cap: int | None, seed: int) -> np.ndarray:
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[:cap] if cap is not None and cap < n else order)


def _flat(labels: np.ndarray) -> np.ndarray:
    return labels.reshape(len(labels), -1)[:, 0]


def prepare_data(
    dataset: str,
    folder: Path,
    *,
    datasets_dir: Path | None,
    hospitals: int,
    alpha: float | None,
    max_train: int | None,
    max_val: int | None,
    max_test: int | None,
    seed: int,
) -> DemoData:
    """Write one shard per hospital and the benchmark under ``folder``."""
    source = ensure_medmnist(dataset, resolve_datasets_dir(datasets_dir))
    folder.mkdir(parents=True, exist_ok=True)
    with np.load(source, allow_pickle=False) as archive:
        arrays = {key: archive[key] for key in archive.files}
    train_idx = _capped(len(arrays["train_labels"]), max_train, seed)
    images, labels = arrays["train_images"][train_idx], arrays["train_labels"][train_idx]
    flat = _flat(labels)
    if alpha is None:
        parts = split_iid(flat, hospitals, seed)
    else:
        parts = split_dirichlet(flat, hospitals, alpha, seed)
    shards: list[Path] = []
    for number, part in enumerate(parts):
        path = folder / f"hospital-{number + 1:02d}.npz"
        np.savez(path, train_images=images[part], train_labels=labels[part])
        shards.append(path)
    val_idx = _capped(len(arrays["val_labels"]), max_val, seed + 1)
    test_idx = _capped(len(arrays["test_labels"]), max_test, seed + 2)
    benchmark = folder / f"{dataset}-benchmark.npz"
    np.savez(
        benchmark,
        val_images=arrays["val_images"][val_idx],
        val_labels=arrays["val_labels"][val_idx],
        test_images=arrays["test_images"][test_idx],
        test_labels=arrays["test_labels"][test_idx],
    )
    num_classes = int(max(flat.max(), _flat(arrays["test_labels"]).max())) + 1
    return DemoData(
        source=source,
        shards=shards,
        shard_sizes=[len(p) for p in parts],
        benchmark=benchmark,
        num_classes=num_classes,
        train_total=len(train_idx),
    )
