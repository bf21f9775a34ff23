"""Held-out benchmarks: ``.npz`` files in the MedMNIST layout, registered by admins."""

from __future__ import annotations

import zipfile
from typing import Any

import numpy as np
from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from app.models import Benchmark
from app.security import Actor
from app.services import audit
from app.services.errors import Conflict, InvalidInput
from app.services.staging import Staged
from app.storage import BlobStore

SPLITS = ("train", "val", "test")
REQUIRED_SPLIT = "test"
MAX_CLASSES = 10_000
"""More classes than any classification benchmark the registry evaluates on has."""
LAYOUT_HINT = "give a MedMNIST-layout .npz: test_images, test_labels (and val_* for tuning)"


def inspect_npz(staged: Staged) -> dict[str, Any]:
    """Splits, sizes, number of classes and image shape of a MedMNIST-layout ``.npz``.

    Anything that is not one (empty, truncated, pickled objects, empty splits, labels
    that are not small non-negative integers) is an ``InvalidInput``.
    """
    try:
        with np.load(staged.path, allow_pickle=False) as archive:
            names = set(archive.files)
            arrays = {
                name: archive[name]
                for split in SPLITS
                for name in (f"{split}_images", f"{split}_labels")
                if f"{split}_images" in names and f"{split}_labels" in names
            }
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:
        raise InvalidInput(f"not a readable .npz file: {exc}", hint=LAYOUT_HINT) from exc
    splits = [s for s in SPLITS if f"{s}_images" in arrays]
    if REQUIRED_SPLIT not in splits:
        raise InvalidInput(
            f"the .npz has no {REQUIRED_SPLIT}_images/{REQUIRED_SPLIT}_labels "
            f"(arrays: {sorted(names)})",
            hint=LAYOUT_HINT,
        )
    sizes, shape, top = {}, None, 0
    for split in splits:
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if len(images) == 0 or labels.size == 0:
            raise InvalidInput(
                f"{split}: the split holds no images", hint="give at least one labelled image"
            )
        labels = labels.reshape(len(labels), -1)
        if images.ndim not in (3, 4) or len(images) != len(labels) or labels.shape[1] != 1:
            raise InvalidInput(
                f"{split}: images {images.shape} and labels {labels.shape} do not pair up",
                hint="images (N, H, W) or (N, H, W, C), labels (N,) or (N, 1)",
            )
        if not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0:
            raise InvalidInput(f"{split}: labels must be non-negative integers", hint=LAYOUT_HINT)
        classes = int(labels.max()) + 1
        if classes > MAX_CLASSES:
            raise InvalidInput(
                f"{split}: labels go up to {classes - 1}, that is {classes} classes, over the "
                f"bound of {MAX_CLASSES}",
                hint="labels are class indices 0..C-1; check the labels array",
                num_classes=classes,
                max_classes=MAX_CLASSES,
            )
        sizes[split] = len(images)
        shape = shape or list(images.shape[1:])
        top = max(top, classes)
    return {"sizes": sizes, "num_classes": top, "image_shape": shape or []}


def register_benchmark(
    session: Session, store: BlobStore, actor: Actor, *, name: str, staged: Staged
) -> Benchmark:
    try:
        if session.scalar(select(exists().where(Benchmark.name == name))):
            raise Conflict(f"a benchmark named {name!r} exists", hint="pick another name")
        info = inspect_npz(staged)
    except BaseException:
        staged.discard()
        raise
    store.commit(staged.path, staged.sha256)
    benchmark = Benchmark(
        name=name,
        sha256=staged.sha256,
        size=staged.size,
        num_classes=info["num_classes"],
        sizes=info["sizes"],
        image_shape=info["image_shape"],
        info={},
    )
    session.add(benchmark)
    session.flush()
    audit.record(
        session,
        actor,
        "benchmark.registered",
        target_type="benchmark",
        target_id=benchmark.id,
        name=name,
        sha256=staged.sha256,
        sizes=info["sizes"],
    )
    return benchmark


def list_benchmarks(session: Session) -> list[Benchmark]:
    return list(session.scalars(select(Benchmark).order_by(Benchmark.created_at)))
