"""A worker process's ``Evaluator``: benchmark splits decoded once per file (by sha256),
the batch size measured once per architecture, and the same metrics as a plain pass."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from app.models import Benchmark
from app.storage import LocalBlobStore
from medvec.evaluation import evaluate_model
from medvec.hashing import sha256_file
from medvec.models import build_model
from tests.integration import factories
from worker.config import WorkerSettings
from worker.evaluate import Evaluator, SplitRef, load_benchmark_split


def _stored_benchmark(store: LocalBlobStore, path: Path) -> SplitRef:
    sha = sha256_file(path)
    staged = store.staging_path("bench.tmp")
    shutil.copyfile(path, staged)
    store.commit(staged, sha)
    record = Benchmark(id="b1", name="blood", sha256=sha, num_classes=8)
    return SplitRef.of(record, "test")


@pytest.fixture()
def evaluator(tmp_path: Path) -> Evaluator:
    settings = WorkerSettings(
        environment="test", data_dir=tmp_path, eval_device="cpu", eval_max_batch_size=128
    )
    return Evaluator(settings)


def test_splits_are_decoded_once_per_file_and_evict_oldest_first(
    tmp_path: Path, datasets_dir: Path, evaluator: Evaluator
) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    bench = _stored_benchmark(
        store, factories.make_benchmark(datasets_dir, tmp_path / "b.npz", 64, 32)
    )
    spec = factories.SPEC
    first = evaluator.split(store, bench, "test", spec)
    assert evaluator.split(store, bench, "test", spec) is first
    assert evaluator.decoded == 1
    val = evaluator.split(store, bench, "val", spec)
    assert len(first) == 64 and len(val) == 32 and evaluator.decoded == 2
    grey = spec.model_copy(update={"in_channels": 1})
    evaluator.split(store, bench, "test", grey)  # another input shape: decoded again
    assert evaluator.decoded == 3
    evaluator.capacity = 1
    evaluator.split(store, bench, "val", grey)  # a new entry: the cache keeps only it
    assert evaluator.decoded == 4
    evaluator.split(store, bench, "test", spec)  # evicted, decoded again
    assert evaluator.decoded == 5


def test_evaluation_matches_a_plain_pass_with_a_measured_batch(
    tmp_path: Path, datasets_dir: Path, evaluator: Evaluator
) -> None:
    store = LocalBlobStore(tmp_path / "blobs")
    bench = _stored_benchmark(
        store, factories.make_benchmark(datasets_dir, tmp_path / "b.npz", 200, 8)
    )
    spec = factories.SPEC
    torch.manual_seed(3)
    model = build_model(spec)
    dataset = evaluator.split(store, bench, "test", spec)
    got = evaluator.evaluate(model, dataset, spec)
    size = evaluator.batch_size(model, spec)
    assert size in (32, 64, 128)  # measured, within eval_max_batch_size
    assert evaluator.batch_size(model, spec) == size  # measured once per spec
    plain = evaluate_model(
        model, load_benchmark_split(store, bench, "test", spec), device="cpu", batch_size=50,
        channels_last=False,
    )  # fmt: skip
    assert got.n == plain.n == 200
    assert got.accuracy == plain.accuracy
    assert np.allclose(got.confusion_matrix, plain.confusion_matrix)
    assert got.auc_macro == pytest.approx(plain.auc_macro, abs=1e-6)
