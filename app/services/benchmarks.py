"""Held-out benchmarks: ``.npz`` files in the MedMNIST layout, registered by admins."""

from __future__ import annotations

import zipfile
from typing import Any

import numpy as np
from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from app.errors import Conflict, InvalidInput
from app.models import Benchmark
from app.security import Actor
from app.services import audit
from app.services.staging import Staged
from app.storage import BlobStore

SPLITS = ("train", "val", "test")
REQUIRED_SPLIT = "test"
LAYOUT_HINT = "give a MedMNIST-layout .npz: test_images, test_labels (and val_* for tuning)"


def inspect_npz(staged: Staged) -> dict[str, Any]:
    """Splits, sizes, number of classes and image shape of a MedMNIST-layout ``.npz``."""
    try:
        archive = np.load(staged.path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise InvalidInput(f"not a readable .npz file: {exc}", hint=LAYOUT_HINT) from exc
    with archive:
        names = set(archive.files)
        splits = [s for s in SPLITS if f"{s}_images" in names and f"{s}_labels" in names]
        if REQUIRED_SPLIT not in splits:
            raise InvalidInput(
                f"the .npz has no {REQUIRED_SPLIT}_images/{REQUIRED_SPLIT}_labels "
                f"(arrays: {sorted(names)})",
                hint=LAYOUT_HINT,
            )
        sizes, shape, top = {}, None, 0
        for split in splits:
            images, labels = archive[f"{split}_images"], archive[f"{split}_labels"]
            labels = labels.reshape(len(labels), -1)
            if images.ndim not in (3, 4) or len(images) != len(labels) or labels.shape[1] != 1:
                raise InvalidInput(
                    f"{split}: images {images.shape} and labels {labels.shape} do not pair up",
                    hint="images (N, H, W) or (N, H, W, C), labels (N,) or (N, 1)",
                )
            if len(labels) and (labels.min() < 0 or not np.issubdtype(labels.dtype, np.integer)):
                raise InvalidInput(
                    f"{split}: labels must be non-negative integers", hint=LAYOUT_HINT
                )
            sizes[split] = len(images)
            shape = shape or list(images.shape[1:])
            top = max(top, int(labels.max()) + 1 if len(labels) else 0)
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
